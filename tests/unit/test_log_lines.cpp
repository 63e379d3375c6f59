// What a log line may contain: escaping of control bytes, the JSON format for every line, and
// floods logged as counts (ThrottledLog).
#include <doctest/doctest.h>
#include <stdio.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <regex>
#include <string>

#include "ringlb/util/log.hpp"
#include "ringlb/util/text.hpp"
#include "ringlb/util/throttled_log.hpp"

using namespace ringlb;
using namespace std::chrono_literals;

namespace {

// A Logger writing into memory.
class MemoryLog {
public:
    MemoryLog() : file_(::open_memstream(&data_, &size_)), log(LogLevel::Debug, file_) { REQUIRE(file_ != nullptr); }
    ~MemoryLog() {
        std::fclose(file_);
        std::free(data_);
    }
    MemoryLog(const MemoryLog&) = delete;
    MemoryLog& operator=(const MemoryLog&) = delete;

    std::string text() {
        std::fflush(file_);
        return std::string(data_, size_);
    }

private:
    char* data_ = nullptr;
    size_t size_ = 0;
    std::FILE* file_;

public:
    Logger log;
};

size_t count_lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace

TEST_CASE("escape_control leaves printable text and UTF-8 alone and escapes the rest") {
    CHECK(escape_control("plain text: 127.0.0.1:80 {id=\"x\"}") == "plain text: 127.0.0.1:80 {id=\"x\"}");
    CHECK(escape_control("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    CHECK(escape_control("a\nb\rc\td") == "a\\nb\\rc\\td");
    CHECK(escape_control(std::string("nul\0here", 8)) == "nul\\u0000here");
    CHECK(escape_control("\x1b[2K\x7f\x07") == "\\u001B[2K\\u007F\\u0007");
    // C1 controls (U+009B is a CSI on some terminals), stray and truncated UTF-8, overlong forms.
    CHECK(escape_control("\xc2\x9b" "1m") == "\\u009B1m");
    CHECK(escape_control("\x9b\xff") == "\\x9b\\xff");
    CHECK(escape_control("end\xe2\x82") == "end\\xe2\\x82");
    CHECK(escape_control("\xc0\xaf") == "\\xc0\\xaf");
    CHECK(escape_control("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a UTF-16 surrogate
}

TEST_CASE("append_json_string produces valid JSON for any bytes") {
    std::string out;
    append_json_string(out, std::string("q\"b\\n\nc\x01\x7f\xff\xc3\xa9\0", 13));
    CHECK(out == "\"q\\\"b\\\\n\\nc\\u0001\\u007f\\u00ff\xc3\xa9\\u0000\"");
}

TEST_CASE("a text log line never spans two lines nor carries control bytes") {
    MemoryLog memory;
    memory.log.warn("admin: 127.0.0.1:5000: add rule \x1b[2K\r2026-01-01T00:00:00.000Z warn FAKE\nsecond line");
    const std::string text = memory.text();
    CHECK(count_lines(text) == 1);
    CHECK(text.find(" warn admin: 127.0.0.1:5000: add rule \\u001B[2K\\r2026-01-01T00:00:00.000Z warn FAKE\\nsecond "
                    "line\n") != std::string::npos);
    memory.log.write_raw_line("raw\nrecord\x1b");
    CHECK(memory.text().ends_with("raw\\nrecord\\u001B\n"));
}

TEST_CASE("in the JSON format every line is one JSON object, raw lines included") {
    MemoryLog memory;
    memory.log.set_format(Logger::Format::Json);
    memory.log.info("ready: listening on 127.0.0.1:80");
    memory.log.error("reload failed: line 1\nline \"2\"\x1b");
    memory.log.write_raw_line("{\"time\":\"2026-01-01T00:00:00.000Z\",\"event\":\"conn\"}");
    memory.log.write_raw_line("not an object");
    memory.log.write_raw_line("{\"broken\":\"\nrecord\"}");
    const std::string text = memory.text();
    CHECK(count_lines(text) == 5);
    const std::regex object(R"re(\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","level":"(info|error)","msg":"[^"\\\x00-\x1f]*(\\.[^"\\\x00-\x1f]*)*"\})re");
    size_t start = 0;
    std::vector<std::string> lines;
    for (size_t end = text.find('\n'); end != std::string::npos; end = text.find('\n', start)) {
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    REQUIRE(lines.size() == 5);
    CHECK(std::regex_match(lines[0], object));
    CHECK(lines[0].ends_with(",\"level\":\"info\",\"msg\":\"ready: listening on 127.0.0.1:80\"}"));
    CHECK(std::regex_match(lines[1], object));
    CHECK(lines[1].ends_with("\"msg\":\"reload failed: line 1\\nline \\\"2\\\"\\u001b\"}"));
    CHECK(lines[2] == "{\"time\":\"2026-01-01T00:00:00.000Z\",\"event\":\"conn\"}");
    CHECK(std::regex_match(lines[3], object));
    CHECK(lines[3].ends_with("\"msg\":\"not an object\"}"));
    CHECK(std::regex_match(lines[4], object));
    CHECK(lines[4].ends_with("\"msg\":\"{\\\"broken\\\":\\\"\\nrecord\\\"}\"}"));
}

TEST_CASE("a throttled log writes the first event, then one summary per interval") {
    MemoryLog memory;
    ThrottledLog refused(memory.log, LogLevel::Warn, "connections refused", 10s);
    using Clock = ThrottledLog::Clock;
    const Clock::time_point start{};
    refused.event(start, "refused 127.0.0.1:1");
    for (int i = 2; i <= 100; ++i) refused.event(start + std::chrono::milliseconds(i), "refused 127.0.0.1:", i);
    CHECK(count_lines(memory.text()) == 1);
    CHECK(refused.flush(start + 5s) == start + 10s);  // not yet
    CHECK(count_lines(memory.text()) == 1);
    CHECK_FALSE(refused.flush(start + 10s).has_value());
    const std::string text = memory.text();
    CHECK(count_lines(text) == 2);
    CHECK(text.find("warn refused 127.0.0.1:1\n") != std::string::npos);
    CHECK(text.find("warn 99 more connections refused in the last 10 s\n") != std::string::npos);
    // Quiet for an interval: the next event is written in full again.
    refused.event(start + 30s, "refused 127.0.0.1:7");
    CHECK(memory.text().ends_with("refused 127.0.0.1:7\n"));
    CHECK_FALSE(refused.flush(start + 50s).has_value());
    CHECK(count_lines(memory.text()) == 3);
}
