// Fuzz target: the small value parsers every config key and admin argument goes through:
// durations and sizes (config/units.hpp), socket addresses (net/address.hpp) and client
// patterns with matches() (net/client_pattern.hpp). The whole input is the text given to each.
//
// Properties:
// - a parsed duration or size written back in plain digits ("<n>ms", "<n>") parses to the same
//   value: the overflow checks and the unit table agree with each other;
// - SocketAddress::parse() succeeds exactly when parse_error() is empty, and to_string() of a
//   parsed address parses back to an equal address (the config writer relies on both);
// - ClientPattern::parse() fills the error exactly when it fails, keeps the text as typed, and a
//   pattern matches the clients it names: the address written the same way ("1.2.3.4:80" as a
//   pattern matches the client 1.2.3.4:80), and one built from the pattern with each wildcard
//   replaced by '1' and a CIDR suffix dropped (a network address is inside its own block);
// - a client matches the same patterns whether it arrives as IPv4 or as IPv4-mapped IPv6 (the
//   README promises that 1.2.3.4 and ::ffff:1.2.3.4 are one client);
// - glob_match(p, p) holds for every p: '*' and '?' match themselves too.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "ringlb/config/units.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/net/client_pattern.hpp"

namespace ringlb::fuzz {
namespace values_target {

std::string shown(std::string_view text) { return "\"" + std::string(text) + "\""; }

void check_duration(std::string_view text) {
    const auto duration = config::parse_duration(text);
    if (!duration) return;
    require(duration->count() >= 0, "parse_duration(" + shown(text) + ") is negative");
    const std::string in_millis = std::to_string(duration->count()) + "ms";
    require(config::parse_duration(in_millis) == duration,
            "parse_duration(" + shown(text) + ") = " + in_millis + " does not read back");
}

void check_size(std::string_view text) {
    const auto size = config::parse_size(text);
    if (!size) return;
    const std::string in_bytes = std::to_string(*size);
    require(config::parse_size(in_bytes) == size, "parse_size(" + shown(text) + ") = " + in_bytes + " does not read back");
}

void check_address(std::string_view text) {
    const auto address = net::SocketAddress::parse(text);
    const std::string reason = net::SocketAddress::parse_error(text);
    require(address.has_value() == reason.empty(),
            "SocketAddress::parse and parse_error disagree on " + shown(text) + " (reason: " + reason + ")");
    if (!address) return;
    require(address->is_v4() || address->is_v6(), "SocketAddress::parse(" + shown(text) + ") has no family");
    const std::string written = address->to_string();
    const auto reread = net::SocketAddress::parse(written);
    require(reread && *reread == *address,
            "SocketAddress " + shown(text) + " written as " + shown(written) + " does not read back the same");
}

// The same client as IPv4-mapped IPv6 (for an IPv4 address) or as IPv4 (for a mapped one).
std::optional<net::SocketAddress> family_twin(const net::SocketAddress& address) {
    const std::string port = std::to_string(address.port());
    if (address.is_v4()) return net::SocketAddress::parse("[::ffff:" + address.ip_string() + "]:" + port);
    in6_addr ip{};
    if (inet_pton(AF_INET6, address.ip_string().c_str(), &ip) != 1 || !IN6_IS_ADDR_V4MAPPED(&ip)) return std::nullopt;
    char dotted[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &ip.s6_addr[12], dotted, sizeof dotted);
    return net::SocketAddress::parse(std::string(dotted) + ":" + port);
}

void require_same_for_twin(const net::ClientPattern& pattern, const net::SocketAddress& client) {
    const auto twin = family_twin(client);
    if (!twin) return;
    require(pattern.matches(client) == pattern.matches(*twin),
            "pattern " + shown(pattern.text()) + " treats " + client.to_string() + " and " + twin->to_string() +
                " differently");
}

bool is_canonical_port(std::string_view text) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text.front() == '0')) return false;
    if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
    return std::stoul(std::string(text)) <= 65535;
}

// A client the pattern names, when one is easy to write down: each '*' and '?' becomes '1',
// "/bits" is dropped (the network address itself), a missing port becomes 1. Splits the port
// the same way the README describes patterns: after "]" for IPv6, after the only ':' for IPv4.
std::optional<net::SocketAddress> member_of(std::string_view pattern) {
    std::string ip, port;
    if (!pattern.empty() && pattern.front() == '[') {
        const size_t close = pattern.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        ip = pattern.substr(1, close - 1);
        const std::string_view rest = pattern.substr(close + 1);
        if (!rest.empty()) port = rest.substr(1);
    } else if (std::count(pattern.begin(), pattern.end(), ':') == 1) {
        const size_t colon = pattern.find(':');
        ip = pattern.substr(0, colon);
        port = pattern.substr(colon + 1);
    } else {
        ip = pattern;
    }
    if (const size_t slash = ip.find('/'); slash != std::string::npos) ip.resize(slash);
    std::replace_if(ip.begin(), ip.end(), [](char c) { return c == '*' || c == '?'; }, '1');
    std::replace_if(port.begin(), port.end(), [](char c) { return c == '*' || c == '?'; }, '1');
    if (port.empty()) port = "1";
    if (ip.empty() || !is_canonical_port(port)) return std::nullopt;
    const bool is_v6 = ip.find(':') != std::string::npos;
    return net::SocketAddress::parse(is_v6 ? "[" + ip + "]:" + port : ip + ":" + port);
}

// A client that depends on every input byte, to reach matches() with addresses the pattern
// text does not spell; both families, so that v4, v6 and mapped paths all run.
net::SocketAddress hashed_client(std::string_view text, bool as_v6) {
    uint64_t hash = 1469598103934665603ULL;  // FNV-1a
    for (const char c : text) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    const auto byte = [&](int i) { return std::to_string((hash >> (8 * i)) & 0xFF); };
    const std::string port = std::to_string((hash >> 40) & 0xFFFF);
    if (!as_v6) return *net::SocketAddress::parse(byte(0) + "." + byte(1) + "." + byte(2) + "." + byte(3) + ":" + port);
    char text6[INET6_ADDRSTRLEN] = {};
    uint8_t ip[16] = {};
    std::memcpy(ip, &hash, sizeof hash);
    std::memcpy(ip + 8, &hash, sizeof hash);
    inet_ntop(AF_INET6, ip, text6, sizeof text6);
    return *net::SocketAddress::parse("[" + std::string(text6) + "]:" + port);
}

void check_pattern(std::string_view text) {
    std::string error;
    const auto pattern = net::ClientPattern::parse(text, &error);
    require(pattern.has_value() == error.empty(),
            "ClientPattern::parse(" + shown(text) + ") result and error disagree (error: " + error + ")");
    if (!pattern) return;
    require(pattern->text() == text, "ClientPattern " + shown(text) + " changed its text to " + shown(pattern->text()));

    if (const auto same_text = net::SocketAddress::parse(text)) {
        require(pattern->matches(*same_text), "pattern " + shown(text) + " does not match the client " + shown(text));
    }
    if (const auto member = member_of(text)) {
        require(pattern->matches(*member),
                "pattern " + shown(text) + " does not match the client " + member->to_string() + " it names");
        require_same_for_twin(*pattern, *member);
    }
    require_same_for_twin(*pattern, hashed_client(text, false));
    (void)pattern->matches(hashed_client(text, true));
}

void check_glob(std::string_view text) {
    require(net::glob_match(text, text), "glob_match(" + shown(text) + ", itself) is false");
}

}  // namespace values_target

inline void check_values(std::string_view input) {
    values_target::check_duration(input);
    values_target::check_size(input);
    values_target::check_address(input);
    values_target::check_pattern(input);
    values_target::check_glob(input);
}

}  // namespace ringlb::fuzz

RINGLB_FUZZ_ENTRY(ringlb::fuzz::check_values)
