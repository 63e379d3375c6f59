// Fuzz target: the TLS ClientHello reader (net/client_hello.hpp), which reads the first bytes of
// every client on a listener whose rules route by sni or alpn, before any rule is chosen.
//
// Every call gets a copy of exactly the bytes it may read, so AddressSanitizer reports a read
// past data.size() even for the prefixes below.
//
// Properties (the contract in client_hello.hpp):
// - Done: 0 < consumed <= size; every strict prefix of the hello's records is NeedMore, with a
//   `wanted` above its length and never past consumed (a session waiting for `wanted` bytes must
//   never wait past a hello that would have completed); every longer input gives the same result;
//   the server name is lower-case host name characters, the ALPN names are not empty;
// - NeedMore only below kMaxClientHelloBytes, `wanted` above the input's size and within the
//   bound; Invalid always says why.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "ringlb/net/client_hello.hpp"

namespace ringlb::fuzz {
namespace client_hello_target {

using net::tls::ClientHello;
using Status = ClientHello::Status;

ClientHello parse_exact(std::string_view bytes) {
    std::vector<std::byte> exact(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) exact[i] = static_cast<std::byte>(bytes[i]);
    return net::tls::parse_client_hello(exact);
}

bool same_result(const ClientHello& a, const ClientHello& b) {
    return a.status == b.status && a.consumed == b.consumed && a.server_name == b.server_name && a.alpn == b.alpn;
}

void check_need_more(size_t size, const ClientHello& hello) {
    require(size < net::tls::kMaxClientHelloBytes,
            "NeedMore after " + std::to_string(size) + " bytes, more than a ClientHello may have");
    require(hello.wanted > size && hello.wanted <= net::tls::kMaxClientHelloBytes,
            "NeedMore after " + std::to_string(size) + " bytes wants " + std::to_string(hello.wanted));
}

void check_prefixes_need_more(std::string_view input, const ClientHello& whole) {
    for (size_t length = 0; length < whole.consumed; ++length) {
        const ClientHello prefix = parse_exact(input.substr(0, length));
        require(prefix.status == Status::NeedMore, "the first " + std::to_string(length) + " bytes of a Done hello of " +
                                                       std::to_string(whole.consumed) + " bytes are not NeedMore: " +
                                                       prefix.error);
        require(prefix.wanted > length && prefix.wanted <= whole.consumed,
                "the first " + std::to_string(length) + " bytes of a Done hello of " + std::to_string(whole.consumed) +
                    " bytes want " + std::to_string(prefix.wanted));
    }
}

void check_trailing_data_ignored(std::string_view input, const ClientHello& whole) {
    for (size_t length = whole.consumed; length < input.size(); ++length)
        require(same_result(parse_exact(input.substr(0, length)), whole),
                "the hello of " + std::to_string(whole.consumed) + " bytes parses differently with " +
                    std::to_string(length - whole.consumed) + " bytes after it");
}

void check_names(const ClientHello& whole) {
    for (const char c : whole.server_name)
        require((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.',
                "server name \"" + whole.server_name + "\" holds a character that is not lower-case host name");
    for (const std::string& protocol : whole.alpn) require(!protocol.empty(), "an empty ALPN protocol name");
}

}  // namespace client_hello_target

inline void check_client_hello(std::string_view input) {
    using client_hello_target::Status;
    const client_hello_target::ClientHello whole = client_hello_target::parse_exact(input);
    switch (whole.status) {
        case Status::NeedMore: client_hello_target::check_need_more(input.size(), whole); return;
        case Status::Invalid: require(!whole.error.empty(), "Invalid without an error message"); return;
        case Status::Done:
            require(whole.consumed > 0 && whole.consumed <= input.size(),
                    "Done consumed " + std::to_string(whole.consumed) + " of " + std::to_string(input.size()) + " bytes");
            client_hello_target::check_prefixes_need_more(input, whole);
            client_hello_target::check_trailing_data_ignored(input, whole);
            client_hello_target::check_names(whole);
            return;
    }
}

}  // namespace ringlb::fuzz

RINGLB_FUZZ_ENTRY(ringlb::fuzz::check_client_hello)
