/* Wire constants of OpenVPN's DATA_V2 and of the frames around it (proto/constants.py,
 * dataplane/io.py, offload.py, mss.py spell the same values on the Python side). */
#ifndef XOVPN_PROTO_H
#define XOVPN_PROTO_H

#include <stdint.h>
#include <string.h>

#define OP_DATA_V1 6
#define OP_DATA_V2 9
#define OPCODE_SHIFT 3
#define KEY_ID_MASK 0x07

#define DATA_V2_AAD_LEN 8
#define AEAD_TAG_LEN 16
#define AEAD_NONCE_LEN 12
#define AEAD_NONCE_TAIL_LEN 8
#define DATA_V2_HEADER_LEN 24 /* op|kid|peer-id, packet-id, tag */
#define MIN_PACKET_LEN 25     /* openvpn rejects an empty payload */
#define MAX_PAYLOAD 0xFFFF
#define MAX_PEER_ID 0xFFFFFE

/* 2.7's epoch data format (proto/constants.py, proto/epoch.py) */
#define DATA_V2_EPOCH_AAD_LEN 12 /* op|kid|peer-id, epoch|counter */
#define DATA_V2_EPOCH_OVERHEAD 28
#define EPOCH_KEY_LEN 32
#define EPOCH_MAX 0xFFFFu
#define EPOCH_COUNTER_MAX ((1ull << 48) - 1)
#define EPOCH_FUTURE_KEYS 4
#define EPOCH_RENEG_THRESHOLD 0xF000u
#define EPOCH_LIMIT_BLOCK 16
#define AES_GCM_USAGE_LIMIT ((1ull << 36) - 1)
#define FAILED_VERIFY_LIMIT (1ull << 36)
#define FAILED_VERIFY_WARN (1ull << 35)

#define PACKET_ID_MAX 0xFFFFFFFFull
#define PACKET_ID_RENEG_THRESHOLD 0xFF000000ull
#define PID_BLOCK 65536 /* ids reserved per ledger write (xdppath.PID_BLOCK) */

#define ETH_HLEN 14
#define ETHERTYPE_IP 0x0800
#define ETHERTYPE_IPV6 0x86DD
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define UDP_HLEN 8
#define PROTO_TCP 6
#define PROTO_UDP 17

#define VNET_HDR_LEN 10 /* struct virtio_net_hdr without num_buffers */
#define VNET_NEEDS_CSUM 1
#define VNET_GSO_TCPV4 1
#define VNET_GSO_TCPV6 4
#define COALESCE_MAX_RUN 64

#define SYN_MAX_LEN 128 /* shorter packets are looked at for pings, OCC exit, SYNs */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65000
#define MAX_IP 65535
#define SOL_UDP_LEVEL 17
#define UDP_SEGMENT_OPT 103

#define PING_LEN 16
#define OCC_EXIT_LEN 17
static const uint8_t PING_PAYLOAD[PING_LEN] = {
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb,
    0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48};
static const uint8_t OCC_EXIT_PAYLOAD[OCC_EXIT_LEN] = {
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81,
    0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c, 0x06};

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static inline void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xFF; }
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (v >> 16) & 0xFF; p[2] = (v >> 8) & 0xFF; p[3] = v & 0xFF;
}
static inline void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

#endif
