#pragma once
// Timestamped, levelled log lines: "2026-11-26T10:00:00.123Z info engine=uring (...)".
#include <cstdio>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace ringlb {

enum class LogLevel { Error = 0, Warn = 1, Info = 2, Debug = 3 };

std::optional<LogLevel> parse_log_level(std::string_view text);
std::string_view to_string(LogLevel level);

// One logger per process, passed by reference to whoever logs. Thread-safe: one line is one write.
class Logger {
public:
    explicit Logger(LogLevel level = LogLevel::Info, std::FILE* out = stderr) : level_(level), out_(out) {}

    void set_level(LogLevel level) { level_ = level; }
    LogLevel level() const { return level_; }
    bool enabled(LogLevel level) const { return level <= level_; }

    template <typename... Parts>
    void log(LogLevel level, const Parts&... parts) {
        if (!enabled(level)) return;
        std::ostringstream line;
        (line << ... << parts);
        write_line(level, line.str());
    }
    template <typename... Parts> void error(const Parts&... p) { log(LogLevel::Error, p...); }
    template <typename... Parts> void warn(const Parts&... p) { log(LogLevel::Warn, p...); }
    template <typename... Parts> void info(const Parts&... p) { log(LogLevel::Info, p...); }
    template <typename... Parts> void debug(const Parts&... p) { log(LogLevel::Debug, p...); }

private:
    void write_line(LogLevel level, std::string_view text);

    LogLevel level_;
    std::FILE* out_;
    std::mutex mutex_;
};

}  // namespace ringlb
