#include <doctest/doctest.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/net/client_hello.hpp"

using namespace ringlb::net::tls;
using Status = ClientHello::Status;

namespace {

// Parses a copy sized exactly to the input, so that AddressSanitizer reports any read past the end.
ClientHello parse_bytes(std::string_view bytes) {
    std::vector<std::byte> exact(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) exact[i] = static_cast<std::byte>(bytes[i]);
    return parse_client_hello(exact);
}

// A ClientHello captured from Debian's `openssl s_client`, or a hand-built one, from the fuzz seeds.
std::string seed(std::string_view name) {
    const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "client_hello" / name;
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), path.string());
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string u16(size_t value) { return {static_cast<char>(value >> 8), static_cast<char>(value & 0xFF)}; }

std::string extension(unsigned type, std::string_view data) { return u16(type) + u16(data.size()) + std::string(data); }

std::string server_name_extension(std::string_view name) {
    const std::string entry = std::string(1, '\0') + u16(name.size()) + std::string(name);
    return extension(0, u16(entry.size()) + entry);
}

std::string alpn_extension(std::initializer_list<std::string_view> protocols) {
    std::string list;
    for (const auto protocol : protocols) list += static_cast<char>(protocol.size()) + std::string(protocol);
    return extension(16, u16(list.size()) + list);
}

// A ClientHello message (handshake header included) with these extensions, written from RFC 8446.
std::string hello_message(const std::string& extensions) {
    std::string body = u16(0x0303) + std::string(32, '\x11') + std::string(1, '\0');  // version, random, no session id
    body += u16(4) + u16(0x1301) + u16(0x0a0a);                                     // cipher suites, one GREASE
    body += std::string("\x01\x00", 2);                                            // compression: null
    body += u16(extensions.size()) + extensions;
    return std::string(1, '\x01') + '\0' + u16(body.size()) + body;
}

// The message in handshake records of at most `piece` payload bytes each.
std::string in_records(const std::string& message, size_t piece = 16384) {
    std::string out;
    for (size_t at = 0; at < message.size(); at += piece) {
        const std::string part = message.substr(at, piece);
        out += std::string("\x16\x03\x01", 3) + u16(part.size()) + part;
    }
    return out;
}

}  // namespace

TEST_CASE("client hello: openssl s_client hellos give their server name and ALPN protocols") {
    const std::string tls13 = seed("openssl-tls13-sni-alpn");
    const ClientHello hello = parse_bytes(tls13);
    REQUIRE_MESSAGE(hello.status == Status::Done, hello.error);
    CHECK(hello.consumed == tls13.size());
    CHECK(hello.server_name == "www.example.com");  // sent as www.Example.com: lower-cased
    CHECK(hello.alpn == std::vector<std::string>{"h2", "http/1.1"});

    const ClientHello tls12 = parse_bytes(seed("openssl-tls12-sni-alpn"));
    REQUIRE_MESSAGE(tls12.status == Status::Done, tls12.error);
    CHECK(tls12.server_name == "api.example.org");
    CHECK(tls12.alpn == std::vector<std::string>{"http/1.1"});

    for (const char* plain : {"openssl-tls13-plain", "openssl-tls12-plain"}) {
        INFO(plain);
        const ClientHello none = parse_bytes(seed(plain));
        REQUIRE_MESSAGE(none.status == Status::Done, none.error);
        CHECK(none.server_name.empty());
        CHECK(none.alpn.empty());
    }
}

TEST_CASE("client hello: every prefix needs more, and `wanted` never passes the end") {
    for (const char* name : {"openssl-tls13-sni-alpn", "openssl-default-sni", "grease-split-records"}) {
        INFO(name);
        const std::string bytes = seed(name);
        size_t parses = 0;
        for (size_t length = 0; length < bytes.size();) {
            const ClientHello prefix = parse_bytes(std::string_view(bytes).substr(0, length));
            REQUIRE(prefix.status == Status::NeedMore);
            REQUIRE(prefix.wanted > length);
            REQUIRE(prefix.wanted <= bytes.size());
            length = prefix.wanted;  // as a session fed one byte at a time parses: only at `wanted`
            ++parses;
        }
        CHECK(parses <= 10);  // a record header and a payload per record (5 at most here), not one per byte
        CHECK(parse_bytes(bytes).status == Status::Done);
    }
}

TEST_CASE("client hello: GREASE values and hellos split over records") {
    const ClientHello grease = parse_bytes(seed("grease-sni-alpn"));
    REQUIRE_MESSAGE(grease.status == Status::Done, grease.error);
    CHECK(grease.server_name == "grease.example.com");
    CHECK(grease.alpn == std::vector<std::string>{"h2", "http/1.1"});
    const ClientHello split = parse_bytes(seed("grease-split-records"));
    REQUIRE_MESSAGE(split.status == Status::Done, split.error);
    CHECK(split.server_name == grease.server_name);
    CHECK(split.alpn == grease.alpn);

    const std::string message = hello_message(server_name_extension("one.example") + alpn_extension({"h2"}));
    for (size_t piece : {1, 2, 5, 100}) {
        INFO("records of ", piece, " bytes");
        const ClientHello hello = parse_bytes(in_records(message, piece));
        REQUIRE_MESSAGE(hello.status == Status::Done, hello.error);
        CHECK(hello.server_name == "one.example");
    }
}

TEST_CASE("client hello: what follows the hello's records is not read") {
    const std::string hello_records = seed("grease-sni-alpn");
    const std::string stream = seed("hello-then-data");
    REQUIRE(stream.starts_with(hello_records));
    const ClientHello hello = parse_bytes(stream);
    REQUIRE(hello.status == Status::Done);
    CHECK(hello.consumed == hello_records.size());
}

TEST_CASE("client hello: anything else is invalid as soon as it shows") {
    CHECK(parse_bytes("G").status == Status::Invalid);
    CHECK(parse_bytes(seed("plain-http")).status == Status::Invalid);
    CHECK(parse_bytes(std::string("\x80", 1)).status == Status::Invalid);          // SSLv2-style hello
    CHECK(parse_bytes(std::string("\x15\x03\x01", 3)).status == Status::Invalid);  // an alert
    CHECK(parse_bytes(std::string("\x16\x02", 2)).status == Status::Invalid);      // not TLS 1.x
    CHECK(parse_bytes(std::string("\x16\x03\x01\x00\x00", 5)).status == Status::Invalid);  // empty record
    // A ServerHello (type 2) where a ClientHello belongs.
    CHECK(parse_bytes(std::string("\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9)).status == Status::Invalid);
    const ClientHello oversized = parse_bytes(seed("oversized-length"));
    CHECK(oversized.status == Status::Invalid);
    CHECK(oversized.error.find("16384") != std::string::npos);

    const auto invalid_with = [](const std::string& extensions) {
        const ClientHello hello = parse_bytes(in_records(hello_message(extensions)));
        INFO(hello.error);
        return hello.status == Status::Invalid && !hello.error.empty();
    };
    CHECK(invalid_with(server_name_extension("a.example") + server_name_extension("b.example")));
    CHECK(invalid_with(alpn_extension({"h2"}) + alpn_extension({"h2"})));
    CHECK(invalid_with(alpn_extension({""})));
    CHECK(invalid_with(server_name_extension("bad name")));
    CHECK(invalid_with(server_name_extension(std::string("nul\0.example", 12))));
    CHECK(invalid_with(extension(0x1a1a, "") + std::string("\x00", 1)));  // extensions block one byte too long
}

TEST_CASE("client hello: a hello that goes past 16 KiB over several records is invalid") {
    const std::string message = hello_message(extension(0xfafa, std::string(16340, 'x')));
    const std::string records = in_records(message, 8000);  // 3 records: 15 header bytes on top
    REQUIRE(records.size() > kMaxClientHelloBytes);
    CHECK(parse_bytes(records).status == Status::Invalid);
    for (size_t length : {size_t{0}, size_t{9}, size_t{8005}}) {
        const ClientHello prefix = parse_bytes(std::string_view(records).substr(0, length));
        CHECK(prefix.status != Status::Done);
        if (prefix.status == Status::NeedMore) CHECK(prefix.wanted <= kMaxClientHelloBytes);
    }
}

TEST_CASE("server name patterns: exact names and one leading wildcard label") {
    CHECK(server_name_matches("example.com", "example.com"));
    CHECK_FALSE(server_name_matches("example.com", "www.example.com"));
    CHECK(server_name_matches("*.example.org", "a.example.org"));
    CHECK_FALSE(server_name_matches("*.example.org", "a.b.example.org"));
    CHECK_FALSE(server_name_matches("*.example.org", "example.org"));
    CHECK_FALSE(server_name_matches("*.example.org", ".example.org"));
    CHECK_FALSE(server_name_matches("*.example.org", "aexample.org"));
    CHECK_FALSE(server_name_matches("example.com", ""));
}
