#include "ringlb/core/connection_record.hpp"

#include "ringlb/util/log.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::core {
namespace {

// Durations come from steady-clock differences and cannot be negative; clamp anyway so that a
// bug elsewhere never prints 18446744073709551615.
template <typename Duration>
uint64_t non_negative_count(Duration duration) {
    return duration.count() < 0 ? 0 : static_cast<uint64_t>(duration.count());
}

uint64_t duration_ms(const ConnectionRecord& record) {
    return non_negative_count(std::chrono::duration_cast<std::chrono::milliseconds>(record.duration));
}

// ---- text ---------------------------------------------------------------------------------

// A text value must not break the "key=value key=value" shape: anything that would is quoted,
// and so is anything beyond ASCII, so that bytes that are not UTF-8 are escaped, never written raw.
bool needs_quotes(std::string_view value) {
    for (const char c : value) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7f || c == '"' || c == '=' || c == '\\') return true;
    }
    return false;
}

void append_text_field(std::string& out, std::string_view key, std::string_view value) {
    out += ' ';
    out += key;
    out += '=';
    if (value.empty()) {
        out += '-';
    } else if (needs_quotes(value)) {
        append_json_string(out, value);  // a quoted text value reads as a JSON string does
    } else {
        out += value;
    }
}

void append_text_number(std::string& out, std::string_view key, uint64_t value) {
    append_text_field(out, key, std::to_string(value));
}

std::string format_text(const ConnectionRecord& record) {
    std::string out = format_utc_timestamp(record.end_time);
    out += " conn";
    append_text_field(out, "client", record.client);
    if (!record.peer.empty()) append_text_field(out, "peer", record.peer);
    append_text_field(out, "listener", record.listener);
    append_text_field(out, "rule", record.rule);
    append_text_field(out, "server", record.server);
    append_text_number(out, "up", record.bytes_up);
    append_text_number(out, "down", record.bytes_down);
    append_text_field(out, "connect_us",
                      record.connect_time ? std::to_string(non_negative_count(*record.connect_time)) : std::string());
    append_text_number(out, "duration_ms", duration_ms(record));
    append_text_field(out, "end", to_string(record.cause));
    append_text_field(out, "client_end", to_string(record.client_end));
    append_text_field(out, "server_end", to_string(record.server_end));
    return out;
}

// ---- JSON (strings escaped by util/text's append_json_string) -----------------------------

void append_json_key(std::string& out, std::string_view key) {
    if (out.size() > 1) out += ',';
    append_json_string(out, key);
    out += ':';
}

void append_json_field(std::string& out, std::string_view key, std::string_view value) {
    append_json_key(out, key);
    append_json_string(out, value);
}

void append_json_number(std::string& out, std::string_view key, uint64_t value) {
    append_json_key(out, key);
    out += std::to_string(value);
}

void append_json_null(std::string& out, std::string_view key) {
    append_json_key(out, key);
    out += "null";
}

void append_json_peer_end(std::string& out, std::string_view key, PeerEnd end) {
    if (end == PeerEnd::None) {
        append_json_null(out, key);
    } else {
        append_json_field(out, key, to_string(end));
    }
}

std::string format_json(const ConnectionRecord& record) {
    std::string out = "{";
    append_json_field(out, "time", format_utc_timestamp(record.end_time));
    append_json_field(out, "event", "conn");
    append_json_field(out, "client", record.client);
    if (!record.peer.empty()) append_json_field(out, "peer", record.peer);
    append_json_field(out, "listener", record.listener);
    append_json_field(out, "rule", record.rule);
    if (record.server.empty()) {
        append_json_null(out, "server");
    } else {
        append_json_field(out, "server", record.server);
    }
    append_json_number(out, "up", record.bytes_up);
    append_json_number(out, "down", record.bytes_down);
    if (record.connect_time) {
        append_json_number(out, "connect_us", non_negative_count(*record.connect_time));
    } else {
        append_json_null(out, "connect_us");
    }
    append_json_number(out, "duration_ms", duration_ms(record));
    append_json_field(out, "end", to_string(record.cause));
    append_json_peer_end(out, "client_end", record.client_end);
    append_json_peer_end(out, "server_end", record.server_end);
    out += '}';
    return out;
}

}  // namespace

std::string_view to_string(EndCause cause) {
    switch (cause) {
        case EndCause::ClientFin: return "client-fin";
        case EndCause::ServerFin: return "server-fin";
        case EndCause::ClientReset: return "client-reset";
        case EndCause::ServerReset: return "server-reset";
        case EndCause::IdleTimeout: return "idle-timeout";
        case EndCause::ConnectFailed: return "connect-failed";
        case EndCause::Limit: return "limit";
        case EndCause::Acl: return "acl";
        case EndCause::Shutdown: return "shutdown";
        case EndCause::Admin: return "admin";
        case EndCause::Error: return "error";
        case EndCause::UntrustedProxy: return "untrusted-proxy";
        case EndCause::QueueTimeout: return "queue-timeout";
    }
    return "error";  // a value cast from a corrupt byte: still one of the documented words
}

std::string_view to_string(PeerEnd end) {
    switch (end) {
        case PeerEnd::None: return "-";
        case PeerEnd::Fin: return "fin";
        case PeerEnd::Reset: return "reset";
        case PeerEnd::Peer: return "peer";
    }
    return "-";
}

std::string format_record(const ConnectionRecord& record, config::LogFormat format) {
    return format == config::LogFormat::Json ? format_json(record) : format_text(record);
}

}  // namespace ringlb::core
