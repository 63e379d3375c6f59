#include "ringlb/net/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <variant>
#include <vector>

namespace ringlb::net::proxy {
namespace {

using Bytes = std::span<const std::byte>;
using Ipv4Bytes = std::array<uint8_t, 4>;
using Ipv6Bytes = std::array<uint8_t, 16>;

// ---------------------------------------------------------------------------------------------
// Wire constants (from the PROXY protocol specification)

constexpr std::string_view kV1Magic = "PROXY";
constexpr std::string_view kV1Unknown = "UNKNOWN";
constexpr std::string_view kV1Tcp4 = "TCP4";
constexpr std::string_view kV1Tcp6 = "TCP6";
constexpr std::string_view kCrlf = "\r\n";
// "0000:0000:0000:0000:0000:ffff:255.255.255.255" is the longest text inet_pton accepts.
constexpr size_t kMaxIpv6Text = 45;

constexpr std::array<uint8_t, 12> kV2Signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2VersionCommandOffset = 12;  // high nibble version, low nibble command
constexpr size_t kV2FamilyOffset = 13;          // high nibble address family, low nibble transport
constexpr size_t kV2LengthOffset = 14;          // big-endian length of what follows the 16 bytes
constexpr unsigned kV2Version = 0x2;
constexpr unsigned kV2CommandLocal = 0x0;
constexpr unsigned kV2CommandProxy = 0x1;
constexpr uint8_t kV2FamilyUnspec = 0x00;
constexpr uint8_t kV2TcpOverIpv4 = 0x11;
constexpr uint8_t kV2UdpOverIpv4 = 0x12;
constexpr uint8_t kV2TcpOverIpv6 = 0x21;
constexpr uint8_t kV2UdpOverIpv6 = 0x22;
constexpr uint8_t kV2UnixStream = 0x31;
constexpr uint8_t kV2UnixDatagram = 0x32;
constexpr size_t kV2Ipv4Block = 4 + 4 + 2 + 2;
constexpr size_t kV2Ipv6Block = 16 + 16 + 2 + 2;
constexpr size_t kV2UnixBlock = 108 + 108;

static_assert(kV2FixedBytes + kV2UnixBlock <= kMaxHeaderBytes, "the largest address block must fit");
static_assert(kMaxV1HeaderBytes <= kMaxHeaderBytes);

// ---------------------------------------------------------------------------------------------
// Results and messages

Parsed need_more() { return {}; }

Parsed invalid(std::string why) {
    Parsed parsed;
    parsed.status = Parsed::Status::Invalid;
    parsed.error = std::move(why);
    return parsed;
}

Parsed done(size_t consumed, std::optional<SocketAddress> source = std::nullopt,
            std::optional<SocketAddress> destination = std::nullopt) {
    Parsed parsed;
    parsed.status = Parsed::Status::Done;
    parsed.consumed = consumed;
    parsed.source = source;
    parsed.destination = destination;
    return parsed;
}

std::string hex_byte(uint8_t value) {
    constexpr std::string_view kDigits = "0123456789abcdef";
    return {kDigits[value >> 4], kDigits[value & 0xF]};
}

// Quotes untrusted bytes for an error message: printable ASCII as is, the rest as \xNN, and
// long input cut short so that a hostile client cannot flood the log.
std::string quoted(std::string_view text) {
    constexpr size_t kMaxShown = 48;
    std::string out = "\"";
    for (const char c : text.substr(0, kMaxShown)) {
        const auto byte = static_cast<uint8_t>(c);
        if (byte >= 0x20 && byte < 0x7F && c != '"' && c != '\\') out += c;
        else out += "\\x" + hex_byte(byte);
    }
    if (text.size() > kMaxShown) out += "...";
    return out + "\"";
}

// ---------------------------------------------------------------------------------------------
// Addresses

SocketAddress make_v4(const Ipv4Bytes& ip, uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    std::memcpy(&sa.sin_addr, ip.data(), ip.size());
    sa.sin_port = htons(port);
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
}

SocketAddress make_v6(const Ipv6Bytes& ip, uint16_t port) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    std::memcpy(&sa.sin6_addr, ip.data(), ip.size());
    sa.sin6_port = htons(port);
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
}

Ipv4Bytes ipv4_bytes(const SocketAddress& address) {
    Ipv4Bytes bytes{};
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr());
    std::memcpy(bytes.data(), &v4->sin_addr, bytes.size());
    return bytes;
}

// IPv6 bytes of either family; IPv4 becomes ::ffff:a.b.c.d so that mixed pairs share a family.
Ipv6Bytes ipv6_bytes(const SocketAddress& address) {
    Ipv6Bytes bytes{};
    if (address.is_v6()) {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr());
        std::memcpy(bytes.data(), &v6->sin6_addr, bytes.size());
        return bytes;
    }
    bytes[10] = 0xFF;
    bytes[11] = 0xFF;
    const Ipv4Bytes v4 = ipv4_bytes(address);
    std::copy(v4.begin(), v4.end(), bytes.begin() + 12);
    return bytes;
}

std::string ipv6_text(const Ipv6Bytes& bytes) {
    char buffer[INET6_ADDRSTRLEN] = {};
    inet_ntop(AF_INET6, bytes.data(), buffer, sizeof buffer);
    return buffer;
}

// Which family a header about (client, local) uses.
enum class HeaderFamily { Unknown, Ipv4, Ipv6 };

HeaderFamily header_family(const SocketAddress& client, const SocketAddress& local) {
    const auto is_ip = [](const SocketAddress& a) { return a.is_v4() || a.is_v6(); };
    if (!is_ip(client) || !is_ip(local)) return HeaderFamily::Unknown;
    if (client.is_v4() && local.is_v4()) return HeaderFamily::Ipv4;
    return HeaderFamily::Ipv6;
}

// ---------------------------------------------------------------------------------------------
// Encoding

std::string encode_v1(const SocketAddress& client, const SocketAddress& local) {
    std::string protocol, source_ip, destination_ip;
    switch (header_family(client, local)) {
        case HeaderFamily::Unknown: return "PROXY UNKNOWN\r\n";
        case HeaderFamily::Ipv4:
            protocol = kV1Tcp4;
            source_ip = client.ip_string();
            destination_ip = local.ip_string();
            break;
        case HeaderFamily::Ipv6:
            protocol = kV1Tcp6;
            source_ip = ipv6_text(ipv6_bytes(client));
            destination_ip = ipv6_text(ipv6_bytes(local));
            break;
    }
    return "PROXY " + protocol + " " + source_ip + " " + destination_ip + " " + std::to_string(client.port()) +
           " " + std::to_string(local.port()) + "\r\n";
}

void append_bytes(std::string& out, std::span<const uint8_t> bytes) {
    for (const uint8_t byte : bytes) out += static_cast<char>(byte);
}

void append_be16(std::string& out, uint16_t value) {
    out += static_cast<char>(value >> 8);
    out += static_cast<char>(value & 0xFF);
}

std::string encode_v2(const SocketAddress& client, const SocketAddress& local) {
    std::string out;
    append_bytes(out, kV2Signature);
    out += static_cast<char>((kV2Version << 4) | kV2CommandProxy);
    switch (header_family(client, local)) {
        case HeaderFamily::Unknown:
            out += static_cast<char>(kV2FamilyUnspec);
            append_be16(out, 0);
            return out;
        case HeaderFamily::Ipv4:
            out += static_cast<char>(kV2TcpOverIpv4);
            append_be16(out, kV2Ipv4Block);
            append_bytes(out, ipv4_bytes(client));
            append_bytes(out, ipv4_bytes(local));
            break;
        case HeaderFamily::Ipv6:
            out += static_cast<char>(kV2TcpOverIpv6);
            append_be16(out, kV2Ipv6Block);
            append_bytes(out, ipv6_bytes(client));
            append_bytes(out, ipv6_bytes(local));
            break;
    }
    append_be16(out, client.port());
    append_be16(out, local.port());
    return out;
}

// ---------------------------------------------------------------------------------------------
// v1 fields. Each field has a full check (the field is complete: a space or CRLF followed it)
// and a prefix check (more bytes may still come). Every prefix check accepts exactly the
// prefixes of what the full check accepts (IPv6: a superset, see could_begin_ipv6), which is
// what lets parse() say Invalid early without ever rejecting a header that would have been valid.

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_hex_digit(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool all_digits(std::string_view text) { return std::all_of(text.begin(), text.end(), is_digit); }

std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    size_t start = 0;
    while (true) {
        const size_t end = text.find(separator, start);
        if (end == std::string_view::npos) break;
        parts.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    parts.push_back(text.substr(start));
    return parts;
}

// Decimal without sign or leading zeros, at most `max`. Leading zeros are refused because no
// sender writes them and accepting them would allow several spellings of one header.
std::optional<unsigned> parse_canonical_decimal(std::string_view text, unsigned max) {
    if (text.empty() || text.size() > 5 || !all_digits(text)) return std::nullopt;
    if (text.size() > 1 && text.front() == '0') return std::nullopt;
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    if (value > max) return std::nullopt;
    return value;
}

std::optional<uint16_t> parse_port(std::string_view text) {
    const auto value = parse_canonical_decimal(text, 65535);
    if (!value) return std::nullopt;
    return static_cast<uint16_t>(*value);
}

// Every non-empty prefix of a canonical decimal is itself canonical and no larger, so a prefix
// is possible exactly when it is empty or already valid. The same holds for octets.
bool could_begin_port(std::string_view text) { return text.empty() || parse_port(text).has_value(); }

bool is_octet(std::string_view text) { return parse_canonical_decimal(text, 255).has_value(); }

bool could_begin_octet(std::string_view text) { return text.empty() || is_octet(text); }

// Strict dotted quad: four canonical octets (no "1.2.3", no "01.2.3.4", no "0x7f.0.0.1").
std::optional<Ipv4Bytes> parse_ipv4(std::string_view text) {
    const auto groups = split(text, '.');
    if (groups.size() != 4 || !std::all_of(groups.begin(), groups.end(), is_octet)) return std::nullopt;
    Ipv4Bytes bytes{};
    for (size_t i = 0; i < groups.size(); ++i) bytes[i] = static_cast<uint8_t>(*parse_canonical_decimal(groups[i], 255));
    return bytes;
}

bool could_begin_ipv4(std::string_view text) {
    const auto groups = split(text, '.');
    if (groups.size() > 4) return false;
    const bool complete_groups_ok = std::all_of(groups.begin(), groups.end() - 1, is_octet);
    return complete_groups_ok && could_begin_octet(groups.back());
}

// The shape every IPv6 text (and each of its prefixes) has: hex groups of up to 4 digits
// separated by at most 8 colons, at most one "::", optionally ending in a dotted IPv4 part.
// inet_pton has the final word on complete addresses.
bool could_begin_ipv6(std::string_view text) {
    if (text.size() > kMaxIpv6Text) return false;
    if (text.find(":::") != std::string_view::npos) return false;
    const size_t gap = text.find("::");
    if (gap != std::string_view::npos && text.find("::", gap + 1) != std::string_view::npos) return false;
    if (std::count(text.begin(), text.end(), ':') > 8) return false;

    std::string_view hex_part = text;
    const size_t dot = text.find('.');
    if (dot != std::string_view::npos) {
        const size_t last_colon = text.rfind(':', dot);
        if (last_colon == std::string_view::npos) return false;
        if (!could_begin_ipv4(text.substr(last_colon + 1))) return false;
        hex_part = text.substr(0, last_colon + 1);
    }
    const auto groups = split(hex_part, ':');
    return std::all_of(groups.begin(), groups.end(), [](std::string_view group) {
        return group.size() <= 4 && std::all_of(group.begin(), group.end(), is_hex_digit);
    });
}

std::optional<Ipv6Bytes> parse_ipv6(std::string_view text) {
    // The shape check first keeps the full check consistent with the prefix check and bounds
    // the copy below.
    if (!could_begin_ipv6(text)) return std::nullopt;
    char buffer[kMaxIpv6Text + 1] = {};
    std::memcpy(buffer, text.data(), text.size());
    Ipv6Bytes bytes{};
    if (inet_pton(AF_INET6, buffer, bytes.data()) != 1) return std::nullopt;
    return bytes;
}

// The fields of "PROXY TCP4 <src> <dst> <sport> <dport>", in order.
enum class V1Field : size_t { Magic, Protocol, SourceAddress, DestinationAddress, SourcePort, DestinationPort };
constexpr size_t kV1FieldCount = 6;

std::string_view field_name(size_t index) {
    constexpr std::array<std::string_view, kV1FieldCount> kNames = {
        "signature", "protocol", "source address", "destination address", "source port", "destination port"};
    return kNames[index];
}

// Returns an error message, or "" when `token` is acceptable as field `index` (in full when
// `complete`, else as the beginning of it). `protocol` is the already complete protocol field.
std::string check_v1_field(size_t index, std::string_view protocol, std::string_view token, bool complete) {
    const auto matches = [&](std::string_view expected) {
        return complete ? token == expected : expected.starts_with(token);
    };
    switch (static_cast<V1Field>(index)) {
        case V1Field::Magic:
            if (matches(kV1Magic)) return {};
            return "v1 header: expected \"PROXY\", got " + quoted(token);
        case V1Field::Protocol:
            if (matches(kV1Tcp4) || matches(kV1Tcp6) || matches(kV1Unknown)) return {};
            return "v1 header: unknown protocol " + quoted(token) + " (expected TCP4, TCP6 or UNKNOWN)";
        case V1Field::SourceAddress:
        case V1Field::DestinationAddress: {
            const bool is_v4 = protocol == kV1Tcp4;
            const bool ok = is_v4 ? (complete ? parse_ipv4(token).has_value() : could_begin_ipv4(token))
                                  : (complete ? parse_ipv6(token).has_value() : could_begin_ipv6(token));
            if (ok) return {};
            return "v1 header: bad " + std::string(field_name(index)) + " " + quoted(token) + " for " +
                   std::string(protocol);
        }
        case V1Field::SourcePort:
        case V1Field::DestinationPort:
            if (complete ? parse_port(token).has_value() : could_begin_port(token)) return {};
            return "v1 header: bad " + std::string(field_name(index)) + " " + quoted(token) +
                   " (expected 0..65535 without leading zeros)";
    }
    return "v1 header: internal error";  // unreachable: index < kV1FieldCount
}

// Checks the space-separated fields of a v1 line; when `last_is_partial` the final token may
// still grow. Returns "" when acceptable.
std::string check_v1_fields(const std::vector<std::string_view>& tokens, bool last_is_partial) {
    std::string_view protocol;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const bool complete = !(last_is_partial && i + 1 == tokens.size());
        if (i >= kV1FieldCount) return "v1 header: unexpected data after the destination port";
        if (complete && tokens[i].empty()) return "v1 header: extra or missing space before the " + std::string(field_name(i));
        if (auto error = check_v1_field(i, protocol, tokens[i], complete); !error.empty()) return error;
        if (i == static_cast<size_t>(V1Field::Protocol)) protocol = tokens[i];
    }
    if (!last_is_partial && tokens.size() < kV1FieldCount)
        return "v1 header: missing " + std::string(field_name(tokens.size()));
    return {};
}

// "PROXY UNKNOWN" may be followed by anything up to CRLF, which the receiver must ignore.
bool announces_unknown(std::string_view line) {
    constexpr std::string_view kPrefix = "PROXY UNKNOWN";
    return line == kPrefix || (line.starts_with(kPrefix) && line.size() > kPrefix.size() && line[kPrefix.size()] == ' ');
}

SocketAddress make_v1_address(std::string_view protocol, std::string_view ip, std::string_view port) {
    const uint16_t port_number = *parse_port(port);
    if (protocol == kV1Tcp4) return make_v4(*parse_ipv4(ip), port_number);
    return make_v6(*parse_ipv6(ip), port_number);
}

// `line` is everything before the first CRLF; `consumed` includes the CRLF.
Parsed parse_v1_line(std::string_view line, size_t consumed) {
    if (announces_unknown(line)) return done(consumed);
    const auto tokens = split(line, ' ');
    if (auto error = check_v1_fields(tokens, /*last_is_partial=*/false); !error.empty()) return invalid(error);
    return done(consumed, make_v1_address(tokens[1], tokens[2], tokens[4]), make_v1_address(tokens[1], tokens[3], tokens[5]));
}

// `text` holds no CRLF: is it the beginning of a valid line?
Parsed check_v1_prefix(std::string_view text) {
    if (text.ends_with('\r')) {
        // Only "\n" can follow, so what came before must already be a complete valid line.
        Parsed line = parse_v1_line(text.substr(0, text.size() - 1), 0);
        return line.status == Parsed::Status::Done ? need_more() : line;
    }
    if (announces_unknown(text)) return need_more();
    if (auto error = check_v1_fields(split(text, ' '), /*last_is_partial=*/true); !error.empty()) return invalid(error);
    return need_more();
}

Parsed parse_v1(std::string_view text) {
    const std::string_view window = text.substr(0, kMaxV1HeaderBytes);
    const size_t line_end = window.find(kCrlf);
    if (line_end != std::string_view::npos) return parse_v1_line(window.substr(0, line_end), line_end + kCrlf.size());
    Parsed prefix = check_v1_prefix(window);
    if (prefix.status == Parsed::Status::Invalid) return prefix;
    if (window.size() >= kMaxV1HeaderBytes) return invalid("v1 header: no CRLF within the first 107 bytes");
    return prefix;
}

// ---------------------------------------------------------------------------------------------
// v2

uint8_t byte_at(Bytes data, size_t index) { return std::to_integer<uint8_t>(data[index]); }

uint16_t be16_at(Bytes data, size_t index) {
    return static_cast<uint16_t>((byte_at(data, index) << 8) | byte_at(data, index + 1));
}

template <size_t N>
std::array<uint8_t, N> bytes_at(Bytes data, size_t index) {
    std::array<uint8_t, N> out{};
    for (size_t i = 0; i < N; ++i) out[i] = byte_at(data, index + i);
    return out;
}

// What the family/protocol byte of a v2 header means for us.
struct V2Family {
    HeaderFamily addresses = HeaderFamily::Unknown;  // Unknown: no addresses to report
    size_t min_block = 0;                            // bytes the address block needs at least
    std::string_view name;
};

std::variant<V2Family, std::string> classify_v2_family(unsigned command, uint8_t family_byte) {
    // LOCAL (health checks from the proxy itself): the spec says to ignore the family entirely.
    if (command == kV2CommandLocal) return V2Family{HeaderFamily::Unknown, 0, "LOCAL"};
    switch (family_byte) {
        case kV2FamilyUnspec: return V2Family{HeaderFamily::Unknown, 0, "UNSPEC"};
        case kV2TcpOverIpv4: return V2Family{HeaderFamily::Ipv4, kV2Ipv4Block, "TCP over IPv4"};
        case kV2TcpOverIpv6: return V2Family{HeaderFamily::Ipv6, kV2Ipv6Block, "TCP over IPv6"};
        case kV2UnixStream: return V2Family{HeaderFamily::Unknown, kV2UnixBlock, "UNIX stream"};
        case kV2UdpOverIpv4:
        case kV2UdpOverIpv6:
        case kV2UnixDatagram:
            return "v2 header: datagram transport (family byte 0x" + hex_byte(family_byte) +
                   ") is not supported, ringlb forwards TCP only";
        default: return "v2 header: unknown address family/transport byte 0x" + hex_byte(family_byte);
    }
}

Parsed decode_v2_addresses(Bytes block, HeaderFamily family, size_t consumed) {
    if (family == HeaderFamily::Ipv4) {
        const auto source = make_v4(bytes_at<4>(block, 0), be16_at(block, 8));
        const auto destination = make_v4(bytes_at<4>(block, 4), be16_at(block, 10));
        return done(consumed, source, destination);
    }
    if (family == HeaderFamily::Ipv6) {
        const auto source = make_v6(bytes_at<16>(block, 0), be16_at(block, 32));
        const auto destination = make_v6(bytes_at<16>(block, 16), be16_at(block, 34));
        return done(consumed, source, destination);
    }
    return done(consumed);
}

Parsed parse_v2(Bytes data) {
    const size_t signature_bytes = std::min(data.size(), kV2Signature.size());
    for (size_t i = 0; i < signature_bytes; ++i)
        if (byte_at(data, i) != kV2Signature[i]) return invalid("v2 header: bad signature at byte " + std::to_string(i));
    if (data.size() <= kV2VersionCommandOffset) return need_more();

    const uint8_t version_command = byte_at(data, kV2VersionCommandOffset);
    const unsigned version = version_command >> 4;
    const unsigned command = version_command & 0xF;
    if (version != kV2Version) return invalid("v2 header: unsupported version " + std::to_string(version) + " (expected 2)");
    if (command != kV2CommandLocal && command != kV2CommandProxy)
        return invalid("v2 header: unknown command " + std::to_string(command) + " (expected 0 LOCAL or 1 PROXY)");
    if (data.size() <= kV2FamilyOffset) return need_more();

    const auto classified = classify_v2_family(command, byte_at(data, kV2FamilyOffset));
    if (const auto* error = std::get_if<std::string>(&classified)) return invalid(*error);
    const auto& family = std::get<V2Family>(classified);
    if (data.size() < kV2FixedBytes) return need_more();

    const size_t block_bytes = be16_at(data, kV2LengthOffset);
    const size_t total = kV2FixedBytes + block_bytes;
    if (total > kMaxHeaderBytes)
        return invalid("v2 header: " + std::to_string(total) + " bytes exceeds the limit of " + std::to_string(kMaxHeaderBytes));
    if (block_bytes < family.min_block)
        return invalid("v2 header: address block of " + std::to_string(block_bytes) + " bytes is too short for " +
                       std::string(family.name) + " (needs " + std::to_string(family.min_block) + ")");
    if (data.size() < total) return need_more();
    return decode_v2_addresses(data.subspan(kV2FixedBytes, block_bytes), family.addresses, total);
}

}  // namespace

std::string encode(Version version, const SocketAddress& client, const SocketAddress& local) {
    return version == Version::V1 ? encode_v1(client, local) : encode_v2(client, local);
}

Parsed parse(std::span<const std::byte> data) {
    if (data.empty()) return need_more();
    const uint8_t first = byte_at(data, 0);
    if (first == static_cast<uint8_t>(kV1Magic.front())) {
        const size_t visible = std::min(data.size(), kMaxV1HeaderBytes);
        return parse_v1(std::string_view(reinterpret_cast<const char*>(data.data()), visible));
    }
    if (first == kV2Signature.front()) return parse_v2(data);
    return invalid("not a PROXY protocol header: first byte 0x" + hex_byte(first) + " is neither 'P' (v1) nor 0x0d (v2)");
}

}  // namespace ringlb::net::proxy
