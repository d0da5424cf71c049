/* TCP MSS clamping of SYNs (dataplane/mss.py, openvpn's mss.c), same rules and bytes. */
#include "engine.h"

#define TCP_SYN 0x02

/* HC' = ~(~HC + ~m + m') for one 16-bit word m -> m' (RFC 1624, eqn. 3). */
static void fix_checksum(uint8_t *at, uint16_t old, uint16_t new)
{
    uint32_t total = (uint16_t)~be16(at) + (uint16_t)~old + new;
    total = (total & 0xFFFF) + (total >> 16);
    total = (total & 0xFFFF) + (total >> 16);
    put16(at, (uint16_t)~total);
}

/* Lower the MSS option of a TCP SYN in pkt[0:n] to mss_v4 (IPv6: 20 less); 1 if changed.
 * Nothing past pkt[n] is read. */
int clamp_mss(uint8_t *pkt, uint32_t n, int mss_v4)
{
    uint32_t tcp, opt_end, i;
    int limit, version;
    if (n < IPV4_HLEN + 20) /* no SYN (mss.py: the same bound) */
        return 0;
    version = pkt[0] >> 4;
    if (version == 4) {
        tcp = (pkt[0] & 0x0F) * 4;
        /* a SYN needs the whole TCP header inside the packet: shorter ones are left alone */
        if (pkt[9] != PROTO_TCP || tcp + 20 > n || be16(pkt + 6) & 0x1FFF)
            return 0;
        limit = mss_v4;
    } else if (version == 6) {
        tcp = IPV6_HLEN;
        if (tcp + 20 > n || pkt[6] != PROTO_TCP)
            return 0;
        limit = mss_v4 - (IPV6_HLEN - IPV4_HLEN);
    } else {
        return 0;
    }
    if (!(pkt[tcp + 13] & TCP_SYN))
        return 0;
    opt_end = tcp + (pkt[tcp + 12] >> 4) * 4;
    if (opt_end > n)
        opt_end = n;
    i = tcp + 20;
    while (i + 1 < opt_end) {
        uint8_t kind = pkt[i], size;
        if (kind == 0)
            return 0;
        if (kind == 1) {
            i++;
            continue;
        }
        size = pkt[i + 1];
        if (size < 2)
            return 0;
        if (kind == 2 && size == 4 && i + 4 <= opt_end) {
            uint16_t mss = be16(pkt + i + 2);
            if (mss <= limit)
                return 0;
            put16(pkt + i + 2, (uint16_t)limit);
            fix_checksum(pkt + tcp + 16, mss, (uint16_t)limit);
            return 1;
        }
        i += size;
    }
    return 0;
}
