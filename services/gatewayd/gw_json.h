/* gw_json.h - etcd 3.4's JSON gateway mapping (grpc-gateway 1.x with golang/protobuf's jsonpb,
 * `OrigName: true`, `EmitDefaults: false`), generic over protobuf-c message descriptors.
 *
 * Request: a JSON object -> the packed protobuf request of the method, as jsonpb reads it:
 *   - field names as in the .proto ("range_end", "ID", "grantedTTL") or their lowerCamelCase
 *     JSON names ("rangeEnd"); an unknown name is ignored; null is "not set"; of a name given
 *     twice the last wins;
 *   - bytes as standard base64 with padding; 64- and 32-bit integers as JSON numbers or as
 *     strings holding one (" 1" is 1, "1e2" and 1.5 are refused); enums by name or number;
 *     bools only as true/false;
 *   - only the first JSON value is read (bytes after it are ignored, as json.Decoder does); an
 *     empty body (or only white space) is the empty request;
 *   - errors carry Go's own texts ("unexpected EOF", "invalid character 'x' looking for
 *     beginning of value", "json: cannot unmarshal number 1.5 into Go value of type int64",
 *     "illegal base64 data at input byte 0", "unknown value \"X\" for enum pkg.Msg_Enum"):
 *     syntax errors of the whole body first, then type errors field by field in .proto order.
 *   - bounded: GW_JSON_MAX_DEPTH nested arrays/objects; the size is the caller's (the body).
 * Response: the packed protobuf response -> JSON with the .proto field names, in field order;
 *   fields at their zero value (0, false, "", empty bytes, empty repeated, absent message)
 *   left out unless a oneof member; 64-bit integers as strings, 32-bit as numbers; enums by
 *   name; bytes as base64; strings escaped as Go's encoding/json does (<, >, & as \u003c...).
 * Errors: {"error":m,"message":m,"code":c} with the HTTP status grpc-gateway 1.x gives code c.
 * Streams (gateway.c): a body is a sequence of requests (gw_json_to_pb_next); the answers are
 *   {"result":<response>} lines, and a stream that fails ends with gw_json_stream_error's object.
 */
#ifndef CAIRN_GW_JSON_H
#define CAIRN_GW_JSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define GW_JSON_MAX_DEPTH 200

/* The request and response descriptors of the gRPC method at path ("/etcdserverpb.KV/Range"),
 * from the services' protobuf-c descriptors. 0, or -1 for a path of no known service. */
int gw_json_method(const char *path, const ProtobufCMessageDescriptor **in, const ProtobufCMessageDescriptor **out);

/* JSON text -> *out (malloc'd packed message of d, *out_len bytes; never NULL on success).
 * Returns 0; CAIRN_EINVAL with Go's text in err; CAIRN_ENOMEM. */
int gw_json_to_pb(const ProtobufCMessageDescriptor *d, const char *json, size_t len, uint8_t **out, size_t *out_len,
                  char *err, size_t errlen);

/* The same for a stream's body, which holds a sequence of JSON values (grpc-gateway reads a
 * client stream with one json.Decoder): converts the first value after white space and sets
 * *used to the bytes up to its end, so the next call starts at json + *used. Returns 0,
 * CAIRN_ENOTFOUND when only white space is left (io.EOF: the client's END_STREAM),
 * CAIRN_EINVAL with Go's text in err, CAIRN_ENOMEM. */
int gw_json_to_pb_next(const ProtobufCMessageDescriptor *d, const char *json, size_t len, size_t *used, uint8_t **out,
                       size_t *out_len, char *err, size_t errlen);

/* Packed message of d -> *out (malloc'd NUL-terminated JSON, *out_len bytes without the NUL).
 * Returns 0; CAIRN_EINVAL if pb does not unpack as d; CAIRN_ENOMEM. */
int gw_json_from_pb(const ProtobufCMessageDescriptor *d, const uint8_t *pb, size_t len, char **out, size_t *out_len);

/* {"error":message,"message":message,"code":code} (malloc'd, NUL-terminated); NULL without memory. */
char *gw_json_error(int code, const char *message, size_t *out_len);

/* A stream that fails (grpc-gateway 1.x's streamChunk of the error, written as the stream's
 * last object, without a newline): {"error":{"grpc_code":c,"http_code":h,"message":m,
 * "http_status":"Service Unavailable"}} (malloc'd, NUL-terminated); NULL without memory. */
char *gw_json_stream_error(int code, const char *message, size_t *out_len);

/* grpc-gateway 1.x's HTTP status for a gRPC status code (runtime.HTTPStatusFromCode). */
int gw_json_http_status(int grpc_code);

#endif
