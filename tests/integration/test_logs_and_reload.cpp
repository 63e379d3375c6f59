// The log stream as a whole (JSON lines throughout when asked for) and the visibility of a failed
// reload in show stats and the metrics.
#include <signal.h>

#include <cctype>
#include <fstream>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

bool contains(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

// A strict reader of one JSON value (RFC 8259), enough to tell whether a log line is valid JSON.
class JsonChecker {
public:
    explicit JsonChecker(std::string_view text) : text_(text) {}

    // True when the whole text is one JSON object.
    bool is_object() {
        skip_space();
        if (peek() != '{' || !value()) return false;
        skip_space();
        return at_ == text_.size();
    }

private:
    char peek() const { return at_ < text_.size() ? text_[at_] : '\0'; }
    bool eat(char c) {
        if (peek() != c) return false;
        ++at_;
        return true;
    }
    void skip_space() {
        while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\t')) ++at_;
    }
    bool literal(std::string_view word) {
        if (text_.substr(at_, word.size()) != word) return false;
        at_ += word.size();
        return true;
    }

    bool value() {
        skip_space();
        switch (peek()) {
            case '{': return object();
            case '[': return array();
            case '"': return string();
            case 't': return literal("true");
            case 'f': return literal("false");
            case 'n': return literal("null");
            default: return number();
        }
    }
    bool object() {
        eat('{');
        skip_space();
        if (eat('}')) return true;
        do {
            skip_space();
            if (!string()) return false;
            skip_space();
            if (!eat(':') || !value()) return false;
            skip_space();
        } while (eat(','));
        return eat('}');
    }
    bool array() {
        eat('[');
        skip_space();
        if (eat(']')) return true;
        do {
            if (!value()) return false;
            skip_space();
        } while (eat(','));
        return eat(']');
    }
    bool string() {
        if (!eat('"')) return false;
        while (at_ < text_.size()) {
            const auto c = static_cast<unsigned char>(text_[at_++]);
            if (c == '"') return true;
            if (c < 0x20) return false;
            if (c != '\\') continue;
            const char escaped = peek();
            ++at_;
            if (escaped == 'u') {
                for (int i = 0; i < 4; ++i)
                    if (!std::isxdigit(static_cast<unsigned char>(peek())) || at_++ >= text_.size()) return false;
            } else if (std::string_view("\"\\/bfnrt").find(escaped) == std::string_view::npos) {
                return false;
            }
        }
        return false;
    }
    bool number() {
        const size_t start = at_;
        eat('-');
        while (std::isdigit(static_cast<unsigned char>(peek())) || peek() == '.' || peek() == 'e' || peek() == 'E' ||
               peek() == '+' || peek() == '-')
            ++at_;
        return at_ > start;
    }

    std::string_view text_;
    size_t at_ = 0;
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    size_t start = 0;
    for (size_t end = text.find('\n'); end != std::string::npos; end = text.find('\n', start)) {
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    if (start < text.size()) lines.push_back(text.substr(start));
    return lines;
}

void overwrite(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::trunc) << text; }

}  // namespace

TEST_CASE("logs: with log_format = \"json\" every line of the stream is a JSON object") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global;
    global.extra_lines = {"log_format = \"json\"", "log_connections = true"};
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    const std::string config = simple_config(port, {{a.endpoint()}}, global);
    RinglbProcess ringlb(config);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    CHECK(fetch_name(port) == "a");  // a connection line
    CHECK(admin_command(admin_port, "remove rule \x1b[2Kmulti\rline").last.starts_with("error: "));
    CHECK(admin_command(admin_port, "set weight test " + a.endpoint() + " 2").ok());  // an info line
    overwrite(ringlb.config_path(), "[global\nthreads = \"many\"\n");
    CHECK(admin_command(admin_port, "reload").last.starts_with("error: reload: "));  // a multi-line error
    REQUIRE(ringlb.wait_for_log("\"event\":\"conn\""));
    overwrite(ringlb.config_path(), config);
    CHECK_CLEAN_EXIT(ringlb);

    const std::vector<std::string> lines = lines_of(ringlb.log_text());
    CHECK(lines.size() >= 6);
    for (const std::string& line : lines) {
        INFO("line: ", line);
        CHECK(JsonChecker(line).is_object());
    }
    const std::string log = ringlb.log_text();
    CHECK(contains(log, "\"level\":\"info\",\"msg\":\"ready: listening on "));
    CHECK(contains(log, "\"level\":\"error\",\"msg\":\"reload failed, the running configuration is unchanged: "));
    CHECK(contains(log, "\"msg\":\"stopped: "));
}

TEST_CASE("reload: a failed reload shows in show stats and the metrics until one succeeds") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port(), metrics_port = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\"", "[metrics]",
                             "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    const std::string config = simple_config(port, {{a.endpoint()}}, global);
    RinglbProcess ringlb(config);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    AdminReply stats = admin_command(admin_port, "show stats");
    CHECK(reply_value(stats, "reload_failures") == 0);
    CHECK(reply_value(stats, "last_reload_successful") == 1);
    const std::string started = http_get(metrics_port, "/metrics");
    CHECK(contains(started, "\nringlb_config_last_reload_successful 1\n"));
    CHECK(!contains(started, "\nringlb_config_last_reload_success_timestamp_seconds 0\n"));

    overwrite(ringlb.config_path(), "this is not [toml\n");
    CHECK(admin_command(admin_port, "reload").last.starts_with("error: reload: "));
    ::kill(ringlb.pid(), SIGHUP);  // the signal's failure counts as well
    for (int i = 0; i < 100 && reply_value(stats, "reload_failures") != 2; ++i) {
        std::this_thread::sleep_for(20ms);
        stats = admin_command(admin_port, "show stats");
    }
    INFO(stats.body);
    CHECK(reply_value(stats, "reloads") == 2);
    CHECK(reply_value(stats, "reload_failures") == 2);
    CHECK(reply_value(stats, "last_reload_successful") == 0);
    CHECK(contains(stats.body, "\nlast_reload_error "));
    const std::string failed = http_get(metrics_port, "/metrics");
    CHECK(contains(failed, "\nringlb_config_reload_failures_total 2\n"));
    CHECK(contains(failed, "\nringlb_config_last_reload_successful 0\n"));

    overwrite(ringlb.config_path(), config);
    CHECK(admin_command(admin_port, "reload").ok());
    stats = admin_command(admin_port, "show stats");
    CHECK(reply_value(stats, "reload_failures") == 2);
    CHECK(reply_value(stats, "last_reload_successful") == 1);
    CHECK(!contains(stats.body, "last_reload_error"));
    CHECK(contains(http_get(metrics_port, "/metrics"), "\nringlb_config_last_reload_successful 1\n"));
    const std::string log = ringlb.log_text();
    size_t failures_logged = 0;
    for (size_t at = log.find("reload failed"); at != std::string::npos; at = log.find("reload failed", at + 1))
        ++failures_logged;
    CHECK(failures_logged == 2);
    CHECK_CLEAN_EXIT(ringlb);
}
