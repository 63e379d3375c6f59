#include "ringlb/net/client_pattern.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "ringlb/util/text.hpp"

namespace ringlb::net {
namespace {

bool all_chars_in(std::string_view text, std::string_view allowed) {
    return std::all_of(text.begin(), text.end(), [&](char c) { return allowed.find(c) != std::string_view::npos; });
}

bool has_glob(std::string_view text) { return text.find_first_of("*?") != std::string_view::npos; }

std::optional<unsigned> parse_decimal(std::string_view text) {
    if (text.empty() || text.size() > 5 || !all_chars_in(text, "0123456789")) return std::nullopt;
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
}

// The 16 bytes of an IP with IPv4 mapped into ::ffff:0:0/96, so both families share one space.
using Ip16 = uint8_t[16];

void map_v4(const in_addr& v4, Ip16 out) {
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xFF;
    std::memcpy(out + 12, &v4, 4);
}

bool is_v4_mapped(const Ip16 ip) {
    static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    return std::memcmp(ip, prefix, sizeof prefix) == 0;
}

void client_ip16(const SocketAddress& client, Ip16 out) {
    if (client.is_v4()) {
        map_v4(reinterpret_cast<const sockaddr_in*>(client.sockaddr_ptr())->sin_addr, out);
    } else if (client.is_v6()) {
        std::memcpy(out, reinterpret_cast<const sockaddr_in6*>(client.sockaddr_ptr())->sin6_addr.s6_addr, 16);
    } else {
        std::memset(out, 0, 16);
    }
}

// Parses an exact IPv4 or IPv6 address into 16 bytes (IPv4 mapped); *is_v4 tells which it was.
bool parse_ip16(std::string_view text, Ip16 out, bool* is_v4) {
    const std::string host(text);
    in_addr v4{};
    if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
        map_v4(v4, out);
        *is_v4 = true;
        return true;
    }
    in6_addr v6{};
    if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
        std::memcpy(out, v6.s6_addr, 16);
        *is_v4 = false;
        return true;
    }
    return false;
}

bool prefix_equal(const Ip16 a, const Ip16 b, unsigned bits) {
    const unsigned whole = bits / 8;
    if (std::memcmp(a, b, whole) != 0) return false;
    const unsigned rest = bits % 8;
    if (rest == 0) return true;
    const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

// The text split into the address part and the optional port glob.
struct Parts {
    std::string_view address;
    std::string_view port;  // empty = no port part
    bool has_port = false;
};

std::optional<Parts> split_port(std::string_view text, std::string* reason) {
    if (text.front() == '[') {
        const size_t close = text.find(']');
        if (close == std::string_view::npos) {
            *reason = "missing ']'";
            return std::nullopt;
        }
        const std::string_view rest = text.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') {
            *reason = "unexpected text after ']' (expected :port)";
            return std::nullopt;
        }
        return Parts{text.substr(1, close - 1), rest.empty() ? rest : rest.substr(1), !rest.empty()};
    }
    const size_t colon = text.find(':');
    if (colon == std::string_view::npos) return Parts{text, {}, false};
    // More than one ':' is a bare IPv6 address, which cannot carry a port part.
    if (text.find(':', colon + 1) != std::string_view::npos) return Parts{text, {}, false};
    return Parts{text.substr(0, colon), text.substr(colon + 1), true};
}

bool valid_port_glob(std::string_view glob, std::string* reason) {
    if (glob.empty() || !all_chars_in(glob, "0123456789*?")) {
        *reason = "invalid port pattern '" + std::string(glob) + "' (digits, '*' and '?' only)";
        return false;
    }
    if (!has_glob(glob)) {
        const auto port = parse_decimal(glob);
        // matches() compares the client port's decimal text, so "080" could never match port 80.
        if (!port || *port > 65535 || (glob.size() > 1 && glob.front() == '0')) {
            *reason = "invalid port '" + std::string(glob) + "' (expected 0..65535 without leading zeros)";
            return false;
        }
    }
    return true;
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text) {
    // Greedy scan with one backtrack point: the last '*' seen and where its run ended.
    size_t p = 0, t = 0;
    size_t star = std::string_view::npos, star_text = 0;
    while (t < text.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
            ++p;
            ++t;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            star_text = t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++star_text;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

std::optional<ClientPattern> ClientPattern::parse(std::string_view text, std::string* error) {
    std::string reason;
    auto fail = [&]() -> std::optional<ClientPattern> {
        if (error) *error = "client pattern '" + escaped(text) + "': " + reason;
        return std::nullopt;
    };
    if (text.empty()) {
        reason = "empty pattern";
        return fail();
    }
    // Addresses go to inet_pton as C strings: whatever followed a NUL would be ignored without this.
    reason = control_byte_problem(text);
    if (!reason.empty()) return fail();
    const auto parts = split_port(text, &reason);
    if (!parts) return fail();
    if (parts->has_port && !valid_port_glob(parts->port, &reason)) return fail();

    ClientPattern pattern;
    pattern.text_ = std::string(text);
    pattern.port_glob_ = std::string(parts->port);
    const std::string_view address = parts->address;
    const bool bracketed = text.front() == '[';

    if (address == "*") {
        pattern.kind_ = Kind::Any;
        return pattern;
    }
    if (const size_t slash = address.find('/'); slash != std::string_view::npos) {
        bool is_v4 = false;
        if (!parse_ip16(address.substr(0, slash), pattern.network_, &is_v4) || (bracketed && is_v4)) {
            reason = "invalid network address '" + std::string(address.substr(0, slash)) + "'";
            return fail();
        }
        const unsigned max_bits = is_v4 ? 32 : 128;
        const auto bits = parse_decimal(address.substr(slash + 1));
        if (!bits || *bits > max_bits) {
            reason = "invalid prefix length '" + std::string(address.substr(slash + 1)) + "' (expected 0.." +
                     std::to_string(max_bits) + ")";
            return fail();
        }
        pattern.kind_ = Kind::Cidr;
        pattern.prefix_bits_ = is_v4 ? 96 + *bits : *bits;
        return pattern;
    }
    if (has_glob(address)) {
        if (bracketed || !all_chars_in(address, "0123456789.*?")) {
            reason = "wildcards work on dotted IPv4 text only (digits, '.', '*', '?')";
            return fail();
        }
        pattern.kind_ = Kind::Wildcard;
        pattern.ip_glob_ = std::string(address);
        return pattern;
    }
    bool is_v4 = false;
    if (!parse_ip16(address, pattern.network_, &is_v4) || (bracketed && is_v4)) {
        reason = "not an IP address, CIDR block or wildcard";
        return fail();
    }
    pattern.kind_ = Kind::Cidr;  // an exact address is a full-length prefix
    pattern.prefix_bits_ = 128;
    return pattern;
}

bool ClientPattern::matches(const SocketAddress& client) const {
    if (!client.is_v4() && !client.is_v6()) return false;
    if (!port_glob_.empty() && !glob_match(port_glob_, std::to_string(client.port()))) return false;
    Ip16 ip;
    client_ip16(client, ip);
    switch (kind_) {
        case Kind::Any: return true;
        case Kind::Cidr: return prefix_equal(ip, network_, prefix_bits_);
        case Kind::Wildcard: {
            if (!is_v4_mapped(ip)) return false;  // wildcards describe dotted IPv4 text
            in_addr v4{};
            std::memcpy(&v4, ip + 12, 4);
            char dotted[INET_ADDRSTRLEN] = {};
            inet_ntop(AF_INET, &v4, dotted, sizeof dotted);
            return glob_match(ip_glob_, dotted);
        }
    }
    return false;
}

}  // namespace ringlb::net
