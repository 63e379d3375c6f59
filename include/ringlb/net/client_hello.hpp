#pragma once
// The TLS ClientHello, read without terminating TLS: a client's first handshake message names the
// server it wants (SNI, RFC 6066) and the application protocols it offers (ALPN, RFC 7301), in the
// clear, so that a rule can choose a backend by them and forward the bytes unchanged.
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb::net::tls {

// The most bytes (TLS record headers included) read before a ClientHello must be complete. Real
// ones are under 2 KiB (post-quantum key shares bring some near 1.8 KiB); a session holds what it
// read until a rule is chosen, so the bound is its memory.
inline constexpr size_t kMaxClientHelloBytes = size_t{16} * 1024;

struct ClientHello {
    enum class Status { NeedMore, Done, Invalid } status = Status::NeedMore;
    // Done: the bytes up to the end of the TLS record in which the ClientHello ends.
    size_t consumed = 0;
    // NeedMore: the verdict cannot change before this many bytes (from the start) are there, so a
    // caller receiving one byte at a time parses again only then. Always > data.size().
    size_t wanted = 0;
    // Done: the first host_name of the server_name extension, lower-cased; empty when there is none.
    std::string server_name;
    // Done: the protocols of the ALPN extension, as sent, in order; empty when there is none.
    std::vector<std::string> alpn;
    std::string error;  // Invalid: what is wrong, e.g. "not a TLS handshake record (first byte 0x47)"
};

// Examines the first bytes a client sent. NeedMore only while `data` is a strict prefix of a
// possibly valid ClientHello of at most kMaxClientHelloBytes, so that anything else (plain text,
// an SSLv2 hello, an alert) is Invalid as soon as it shows. Call again with more bytes, from the
// start. Never reads past data.size().
//
// Accepted: handshake records (type 22, version 3.x) carrying the ClientHello in one or several
// records, each 1..16384 bytes, the message possibly sharing its last record with what follows.
// The message must be well-formed down to each extension's length; unknown extensions, cipher
// suites and GREASE values (RFC 8701) are skipped unread. A server_name or ALPN extension that
// appears twice, an empty ALPN protocol, or a host name holding anything but letters, digits,
// '-', '_' and '.' is Invalid.
ClientHello parse_client_hello(std::span<const std::byte> data);

// Whether `name` (lower-case) matches a rule's server-name pattern: an exact name, or "*."
// followed by a suffix, where the star stands for exactly one label ("*.example.org" matches
// "a.example.org", not "example.org" nor "a.b.example.org").
bool server_name_matches(std::string_view pattern, std::string_view name);

}  // namespace ringlb::net::tls
