#pragma once
// Client patterns that decide which clients a rule accepts: "*", exact IPs, CIDR blocks and
// G5-style wildcards ("192.168.1.*", "10.?.0.1", optionally with a port: "1.2.3.4:*").
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ringlb/net/address.hpp"

namespace ringlb::net {

class ClientPattern {
public:
    // Returns nullopt and fills *error (when given) with a reason on bad input.
    static std::optional<ClientPattern> parse(std::string_view text, std::string* error = nullptr);

    bool matches(const SocketAddress& client) const;
    // "*" and "*:*" (any address, any port): the pattern every client matches.
    bool matches_everyone() const { return kind_ == Kind::Any && (port_glob_.empty() || port_glob_ == "*"); }
    const std::string& text() const { return text_; }
    // The text decides everything else a pattern holds.
    bool operator==(const ClientPattern& other) const { return text_ == other.text_; }

private:
    enum class Kind { Any, Cidr, Wildcard };
    Kind kind_ = Kind::Any;
    std::string text_;
    // Cidr: network bytes (IPv4 stored as IPv4-mapped IPv6) and prefix length over 128 bits.
    uint8_t network_[16]{};
    unsigned prefix_bits_ = 0;
    // Wildcard: glob over the dotted IP text ('*' any run, '?' one char) and an optional port glob.
    std::string ip_glob_;
    std::string port_glob_;  // empty = any port
};

// Glob match used by wildcard patterns: '*' matches any run (also empty), '?' exactly one char.
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace ringlb::net
