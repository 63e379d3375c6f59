#pragma once
// The PROXY protocol (versions 1 and 2, as specified by HAProxy): a short header that a proxy
// sends first on a connection so that the server learns the real client's address.
// ringlb can prepend one when it connects to a backend (encode) and accept one from an
// upstream proxy in front of it (parse).
#include <cstddef>
#include <optional>
#include <span>
#include <string>

#include "ringlb/net/address.hpp"

namespace ringlb::net::proxy {

enum class Version { V1, V2 };

// Longest v1 header the spec allows: "PROXY TCP6 " + two 39-char IPv6 + two 5-digit ports,
// single spaces and CRLF.
inline constexpr size_t kMaxV1HeaderBytes = 107;
// Fixed part of a v2 header: 12-byte signature, version/command, family/protocol, length.
inline constexpr size_t kV2FixedBytes = 16;
// Longest header parse() accepts. A v2 header may announce up to 16 + 65535 bytes; we bound it
// so that a session needs only a small fixed buffer. 1024 fits the largest address block
// (AF_UNIX, 216 bytes) plus the TLVs real proxies send (AWS/GCP/Azure ids, TLS summaries).
// Longer v2 headers are Invalid.
inline constexpr size_t kMaxHeaderBytes = 1024;

// The header announcing a TCP connection from `client` to `local` (the address ringlb accepted
// it on). Mixed families (one IPv4, one IPv6) are sent as IPv6 for both, the IPv4 one mapped
// (::ffff:a.b.c.d); v1 then says "TCP6". If either address is neither IPv4 nor IPv6 the header
// says "unknown": v1 "PROXY UNKNOWN\r\n", v2 command PROXY with family UNSPEC and no addresses.
// v2 headers carry no TLVs.
std::string encode(Version version, const SocketAddress& client, const SocketAddress& local);

struct Parsed {
    enum class Status { NeedMore, Done, Invalid } status = Status::NeedMore;
    size_t consumed = 0;                  // Done: header length; bytes after it are client data
    // Done: the real client, exactly as the header states it (an IPv4-mapped IPv6 address stays
    // IPv6). nullopt for v1 UNKNOWN, v2 LOCAL, v2 UNSPEC and v2 AF_UNIX: then keep the socket's
    // own address.
    std::optional<SocketAddress> source;
    std::optional<SocketAddress> destination;
    std::string error;                    // Invalid: what is wrong, e.g. "v1 header: bad source port \"70000\""
};

// Examines the first bytes a client sent. NeedMore only while `data` is a strict prefix of a
// possibly valid header, so garbage is Invalid as soon as it shows (a wrong first byte at once).
// Never reads past data.size(). After NeedMore, call again with more bytes (from the start).
//
// Strictness, v1: exactly "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n" with single
// spaces; IPv4 as a dotted quad of decimal octets without leading zeros ("01.2.3.4" is
// Invalid); IPv6 as inet_pton(AF_INET6) accepts it; ports decimal 0..65535 without sign or
// leading zeros ("080" is Invalid); at most 107 bytes including CRLF. "PROXY UNKNOWN" followed
// by anything up to CRLF is Done with no addresses, as the spec asks.
// One approximation: while an IPv6 address is still arriving, its prefix is checked by alphabet
// and shape only, so a few impossible prefixes wait for more bytes (never beyond 107).
//
// Strictness, v2: the 12-byte signature, version 2, command LOCAL or PROXY. LOCAL is Done with
// no addresses whatever its family byte (the spec says to ignore it). PROXY needs a known
// family/protocol byte: TCP over IPv4/IPv6 yields addresses; UNSPEC and UNIX stream yield none;
// any datagram (UDP, UNIX dgram) is Invalid because ringlb forwards TCP. The address block must
// be at least the family's size (12, 36, 216); extra bytes (TLVs) are skipped unread.
Parsed parse(std::span<const std::byte> data);

}  // namespace ringlb::net::proxy
