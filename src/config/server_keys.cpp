// Server keys with a syntax of their own: `source = "IP"` or `"IP:first-last"` (where outgoing
// connections to servers come from) and server names.
#include <algorithm>
#include <cctype>
#include <charconv>

#include "ringlb/config/config.hpp"

namespace ringlb::config {

namespace {

std::optional<uint16_t> parse_port(std::string_view text) {
    unsigned value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) return std::nullopt;
    return static_cast<uint16_t>(value);
}

// "N" or "N-M" with 1 <= N <= M <= 65535.
bool parse_port_range(std::string_view text, SourceConfig& source, std::string* error) {
    const size_t dash = text.find('-');
    const auto first = parse_port(text.substr(0, dash));
    const auto last = dash == std::string_view::npos ? first : parse_port(text.substr(dash + 1));
    if (!first || !last) {
        *error = "bad port range \"" + std::string(text) + "\" (a port 1..65535, or FIRST-LAST)";
        return false;
    }
    if (*first > *last) {
        *error = "port range \"" + std::string(text) + "\" runs backwards";
        return false;
    }
    source.first_port = *first;
    source.last_port = *last;
    return true;
}

}  // namespace

bool valid_dns_server_name(std::string_view name) {
    return valid_server_name(name) && name.size() <= 58 && !std::isdigit(static_cast<unsigned char>(name.back()));
}

bool valid_server_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::isalpha(static_cast<unsigned char>(name.front())) &&
           std::all_of(name.begin(), name.end(), [](unsigned char c) {
               return std::isalnum(c) || c == '_' || c == '.' || c == '-';
           });
}

std::string SourceConfig::to_string() const {
    if (!has_port_range()) return address.ip_string();
    const std::string ip = address.is_v6() ? "[" + address.ip_string() + "]" : address.ip_string();
    return ip + ":" + std::to_string(first_port) + "-" + std::to_string(last_port);
}

std::optional<SourceConfig> parse_source(std::string_view text, std::string* error) {
    std::string_view ip = text;
    std::optional<std::string_view> ports;
    if (text.starts_with('[')) {  // "[v6]" or "[v6]:range"
        const size_t close = text.find(']');
        if (close == std::string_view::npos) {
            *error = "missing ']' after the IPv6 address";
            return std::nullopt;
        }
        ip = text.substr(1, close - 1);
        const std::string_view rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') {
                *error = "expected ':' and a port range after ']'";
                return std::nullopt;
            }
            ports = rest.substr(1);
        }
    } else if (std::count(text.begin(), text.end(), ':') == 1) {  // "v4:range"; a bare v6 has several
        const size_t colon = text.find(':');
        ip = text.substr(0, colon);
        ports = text.substr(colon + 1);
    }
    const bool v6 = ip.find(':') != std::string_view::npos;
    const auto address = net::SocketAddress::parse(v6 ? "[" + std::string(ip) + "]:0" : std::string(ip) + ":0");
    if (!address || ip.empty()) {
        *error = "bad IP address \"" + std::string(ip) + "\" (use \"IP\" or \"IP:FIRST-LAST\", \"[IPv6]:FIRST-LAST\")";
        return std::nullopt;
    }
    SourceConfig source{*address};
    if (ports && !parse_port_range(*ports, source, error)) return std::nullopt;
    return source;
}

}  // namespace ringlb::config
