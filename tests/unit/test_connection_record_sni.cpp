// Connection records of listeners with sni/alpn rules: the server name the client sent.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "ringlb/core/connection_record.hpp"

using namespace ringlb;
using namespace ringlb::core;
using namespace std::chrono;

namespace {

ConnectionRecord record_with_sni(std::string sni) {
    ConnectionRecord record;
    record.end_time = sys_days{year{2026} / 11 / 27} + 10h;
    record.client = "192.0.2.7:51234";
    record.listener = "0.0.0.0:443";
    record.rule = "api";
    record.sni = std::move(sni);
    record.server = "10.0.0.5:443";
    record.cause = EndCause::ClientFin;
    return record;
}

}  // namespace

TEST_CASE("connection record: sni= follows the rule when the client sent a server name, and only then") {
    const std::string text = format_record(record_with_sni("api.example.com"), config::LogFormat::Text);
    CHECK(text.find(" rule=api sni=api.example.com server=10.0.0.5:443 ") != std::string::npos);
    const std::string json = format_record(record_with_sni("api.example.com"), config::LogFormat::Json);
    CHECK(json.find("\"rule\":\"api\",\"sni\":\"api.example.com\",") != std::string::npos);

    CHECK(format_record(record_with_sni(""), config::LogFormat::Text).find("sni=") == std::string::npos);
    CHECK(format_record(record_with_sni(""), config::LogFormat::Json).find("\"sni\"") == std::string::npos);
}

TEST_CASE("connection record: a client closed for its ClientHello ends with cause client-hello") {
    CHECK(to_string(EndCause::ClientHello) == "client-hello");
    ConnectionRecord record = record_with_sni("");
    record.rule.clear();
    record.server.clear();
    record.cause = EndCause::ClientHello;
    CHECK(format_record(record, config::LogFormat::Text).find(" end=client-hello ") != std::string::npos);
}
