// Connection records: the text and JSON lines written per closed session.
#include <doctest/doctest.h>

#include <chrono>

#include "ringlb/core/connection_record.hpp"

using namespace ringlb;
using namespace ringlb::core;
using namespace std::chrono;

namespace {

ConnectionRecord full_record() {
    ConnectionRecord record;
    record.end_time = sys_days{year{2026} / 11 / 27} + 10h + 123ms;
    record.client = "1.2.3.4:5555";
    record.listener = "0.0.0.0:80";
    record.rule = "web";
    record.server = "127.0.0.1:9001";
    record.bytes_up = 123;
    record.bytes_down = 456;
    record.connect_time = microseconds(250);
    record.duration = microseconds(1'234'567);
    record.cause = EndCause::ClientFin;
    record.client_end = PeerEnd::Fin;
    record.server_end = PeerEnd::Fin;
    return record;
}

}  // namespace

TEST_CASE("end causes have their documented names") {
    CHECK(to_string(EndCause::ClientFin) == "client-fin");
    CHECK(to_string(EndCause::ServerFin) == "server-fin");
    CHECK(to_string(EndCause::ClientReset) == "client-reset");
    CHECK(to_string(EndCause::ServerReset) == "server-reset");
    CHECK(to_string(EndCause::IdleTimeout) == "idle-timeout");
    CHECK(to_string(EndCause::ConnectFailed) == "connect-failed");
    CHECK(to_string(EndCause::Limit) == "limit");
    CHECK(to_string(EndCause::Acl) == "acl");
    CHECK(to_string(EndCause::Shutdown) == "shutdown");
    CHECK(to_string(EndCause::Admin) == "admin");
    CHECK(to_string(EndCause::Error) == "error");
    CHECK(to_string(EndCause::UntrustedProxy) == "untrusted-proxy");
    CHECK(to_string(EndCause::QueueTimeout) == "queue-timeout");
}

TEST_CASE("text record lists every field in order") {
    CHECK(format_record(full_record(), config::LogFormat::Text) ==
          "2026-11-27T10:00:00.123Z conn client=1.2.3.4:5555 listener=0.0.0.0:80 rule=web server=127.0.0.1:9001 "
          "up=123 down=456 connect_us=250 duration_ms=1234 end=client-fin client_end=fin server_end=fin");
}

TEST_CASE("text record prints - for an absent server and connect time") {
    ConnectionRecord record = full_record();
    record.server.clear();
    record.connect_time.reset();
    record.cause = EndCause::ConnectFailed;
    record.client_end = PeerEnd::Reset;
    record.server_end = PeerEnd::None;
    CHECK(format_record(record, config::LogFormat::Text) ==
          "2026-11-27T10:00:00.123Z conn client=1.2.3.4:5555 listener=0.0.0.0:80 rule=web server=- "
          "up=123 down=456 connect_us=- duration_ms=1234 end=connect-failed client_end=reset server_end=-");
}

TEST_CASE("text record quotes values that would break the key=value shape") {
    ConnectionRecord record = full_record();
    record.rule = "my \"rule\"\\x\n";
    const std::string line = format_record(record, config::LogFormat::Text);
    CHECK(line.find(R"( rule="my \"rule\"\\x\n" server=)") != std::string::npos);
    CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("json record has the same fields, numbers as numbers") {
    CHECK(format_record(full_record(), config::LogFormat::Json) ==
          R"({"time":"2026-11-27T10:00:00.123Z","event":"conn","client":"1.2.3.4:5555","listener":"0.0.0.0:80",)"
          R"("rule":"web","server":"127.0.0.1:9001","up":123,"down":456,"connect_us":250,"duration_ms":1234,)"
          R"("end":"client-fin","client_end":"fin","server_end":"fin"})");
}

TEST_CASE("json record uses null for an absent server and connect time") {
    ConnectionRecord record = full_record();
    record.server.clear();
    record.connect_time.reset();
    record.cause = EndCause::Acl;
    record.server_end = PeerEnd::None;
    const std::string line = format_record(record, config::LogFormat::Json);
    CHECK(line.find(R"("server":null,)") != std::string::npos);
    CHECK(line.find(R"("connect_us":null,)") != std::string::npos);
    CHECK(line.find(R"("end":"acl",)") != std::string::npos);
    CHECK(line.find(R"("server_end":null})") != std::string::npos);
}

TEST_CASE("json record escapes quotes, backslashes and control characters") {
    ConnectionRecord record = full_record();
    record.rule = std::string("a\"b\\c\nd\te") + '\x01';
    const std::string line = format_record(record, config::LogFormat::Json);
    CHECK(line.find(R"("rule":"a\"b\\c\nd\te\u0001",)") != std::string::npos);
    CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("no end cause is 0: sessions use 0 for a cause not noted yet") {
    for (auto cause : {EndCause::ClientFin, EndCause::ServerFin, EndCause::ClientReset, EndCause::ServerReset,
                       EndCause::IdleTimeout, EndCause::ConnectFailed, EndCause::Limit, EndCause::Acl,
                       EndCause::Shutdown, EndCause::Admin, EndCause::Error, EndCause::UntrustedProxy,
                       EndCause::QueueTimeout})
        CHECK(static_cast<uint8_t>(cause) != 0);
}

TEST_CASE("peer endings have their documented names") {
    CHECK(to_string(PeerEnd::None) == "-");
    CHECK(to_string(PeerEnd::Fin) == "fin");
    CHECK(to_string(PeerEnd::Reset) == "reset");
    CHECK(to_string(PeerEnd::Peer) == "peer");
}

TEST_CASE("each side's ending is in the text and the JSON line") {
    ConnectionRecord record = full_record();
    record.cause = EndCause::IdleTimeout;
    record.client_end = PeerEnd::Reset;
    record.server_end = PeerEnd::Peer;
    const std::string text = format_record(record, config::LogFormat::Text);
    CHECK(text.ends_with(" end=idle-timeout client_end=reset server_end=peer"));
    const std::string json = format_record(record, config::LogFormat::Json);
    CHECK(json.ends_with(R"("end":"idle-timeout","client_end":"reset","server_end":"peer"})"));
}

TEST_CASE("behind a PROXY header the record names the TCP peer after the client, in text and JSON") {
    ConnectionRecord record = full_record();
    record.client = "203.0.113.9:5555";
    record.peer = "127.0.0.9:41000";
    CHECK(format_record(record, config::LogFormat::Text) ==
          "2026-11-27T10:00:00.123Z conn client=203.0.113.9:5555 peer=127.0.0.9:41000 listener=0.0.0.0:80 rule=web "
          "server=127.0.0.1:9001 up=123 down=456 connect_us=250 duration_ms=1234 end=client-fin client_end=fin "
          "server_end=fin");
    CHECK(format_record(record, config::LogFormat::Json)
              .find(R"("client":"203.0.113.9:5555","peer":"127.0.0.9:41000","listener":)") != std::string::npos);
    // Refused before any header: the client is unknown.
    record.client.clear();
    record.rule.clear();
    record.server.clear();
    record.connect_time.reset();
    record.cause = EndCause::UntrustedProxy;
    const std::string text = format_record(record, config::LogFormat::Text);
    CHECK(text.find(" conn client=- peer=127.0.0.9:41000 listener=") != std::string::npos);
    CHECK(text.find(" end=untrusted-proxy ") != std::string::npos);
    // Elsewhere there is no peer field at all.
    CHECK(format_record(full_record(), config::LogFormat::Json).find("peer") == std::string::npos);
}

TEST_CASE("text records quote values beyond ASCII: UTF-8 stays readable, other bytes are escaped") {
    ConnectionRecord record = full_record();
    record.rule = "caf\xC3\xA9";    // UTF-8
    record.server = "web\xFF\x01";  // not UTF-8, and a control character
    const std::string text = format_record(record, config::LogFormat::Text);
    CHECK(text.find(" rule=\"caf\xC3\xA9\" ") != std::string::npos);
    CHECK(text.find(" server=\"web\\u00ff\\u0001\" ") != std::string::npos);
    const std::string json = format_record(record, config::LogFormat::Json);
    CHECK(json.find(R"("server":"web\u00ff\u0001")") != std::string::npos);
}
