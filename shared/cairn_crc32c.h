/* cairn_crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every WAL record. Uses the SSE4.2 crc32 instruction when the CPU has it, otherwise
 * slicing-by-8 tables. cairn_crc32c_extend(0, p, n) == cairn_crc32c(p, n). */
#ifndef CAIRN_CRC32C_H
#define CAIRN_CRC32C_H
#include <stddef.h>
#include <stdint.h>

uint32_t cairn_crc32c(const void *data, size_t len);
uint32_t cairn_crc32c_extend(uint32_t crc, const void *data, size_t len);

#endif
