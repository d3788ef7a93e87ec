/* cairn_bytes.h - integers in byte buffers, for the formats that store them: little-endian
 * (the WAL, snapshot files, bbolt pages), protobuf varints (hand-packed messages), and Go's
 * bytes.Compare order (LevelDB's and bbolt's key order). Header-only: each is a few
 * instructions. */
#ifndef CAIRN_BYTES_H
#define CAIRN_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void cairn_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void cairn_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t cairn_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t cairn_get_le64(const uint8_t *p)
{
    return (uint64_t)cairn_get_le32(p) | (uint64_t)cairn_get_le32(p + 4) << 32;
}

static inline void cairn_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t cairn_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* A protobuf varint (little-endian base 128) at p, at most 10 bytes; returns its length. */
static inline size_t cairn_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Reads the protobuf varint at *p (before end), moving *p past it: 0, or -1 when it is cut
 * short or longer than 10 bytes. */
static inline int cairn_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t c = *(*p)++;
        *v |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80))
            return 0;
    }
    return -1;
}

/* The varint fields 1..nfields-1 of a protobuf message into out[field] (0 when absent);
 * length-delimited fields are skipped, anything else (fixed32/64, groups) is an error: the
 * small etcd messages read this way (leasepb.Lease, etcdserverpb.AlarmMember) have none.
 * 0, or -1 for a malformed message. */
static inline int cairn_pb_varint_fields(const uint8_t *p, size_t n, uint64_t *out, unsigned nfields)
{
    const uint8_t *end = p + n;
    for (unsigned i = 0; i < nfields; i++)
        out[i] = 0;
    while (p < end) {
        uint64_t tag, v;
        if (cairn_get_varint(&p, end, &tag))
            return -1;
        if ((tag & 7) == 0) {
            if (cairn_get_varint(&p, end, &v))
                return -1;
            if ((tag >> 3) >= 1 && (tag >> 3) < nfields)
                out[tag >> 3] = v;
        } else if ((tag & 7) == 2) {
            if (cairn_get_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return -1;
            p += v;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Bytewise order, shorter first on a common prefix: Go's bytes.Compare, LevelDB's default
 * comparator, bbolt's key order. */
static inline int cairn_bytes_cmp(const void *a, size_t an, const void *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

#endif
