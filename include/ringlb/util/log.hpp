#pragma once
// Timestamped, levelled log lines: "2026-11-26T10:00:00.123Z info engine=uring (...)", or one
// JSON object per line: {"time":"...","level":"info","msg":"engine=uring (...)"}.
// Lines go to stderr, or to a file (open_file) that SIGUSR1 log rotation can reopen (reopen).
// One entry is always one line: messages often carry text from the network (admin commands,
// addresses, PROXY headers), so their control bytes are escaped (see escape_control()).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace ringlb {

enum class LogLevel { Error = 0, Warn = 1, Info = 2, Debug = 3 };

std::optional<LogLevel> parse_log_level(std::string_view text);
std::string_view to_string(LogLevel level);

// "2026-11-26T10:00:00.123Z": UTC, millisecond precision, as every log line starts.
std::string format_utc_timestamp(std::chrono::system_clock::time_point time);

// One logger per process, passed by reference to whoever logs. Thread-safe: one line is one write.
class Logger {
public:
    enum class Format { Text, Json };

    explicit Logger(LogLevel level = LogLevel::Info, std::FILE* out = stderr) : level_(level), out_(out) {}
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;

    void set_level(LogLevel level) { level_.store(level, std::memory_order_relaxed); }
    LogLevel level() const { return level_.load(std::memory_order_relaxed); }
    bool enabled(LogLevel level) const { return level <= this->level(); }
    // Set once at start, before other threads log.
    void set_format(Format format) { format_ = format; }
    Format format() const { return format_; }

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

    // From now on writes to `path`, opened for appending (created when missing). The logger owns
    // that file and closes it when replaced or destroyed. Throws std::runtime_error naming the path
    // and the reason when it cannot be opened; the previous destination then stays in use.
    void open_file(const std::string& path);
    // Log rotation (SIGUSR1): opens the path given to open_file() again, so that lines go to a
    // fresh file once the old one was renamed. On failure keeps writing to the old file and logs
    // an error line there. Does nothing while logging to the stream given at construction.
    // Not async-signal-safe: call it from a normal thread after the signal was noticed.
    void reopen();
    // Writes `line` plus '\n', whatever the level: pre-formatted lines such as connection
    // records, which carry their own timestamp (and are JSON objects in the JSON format). Control
    // bytes are escaped here too; in the JSON format a line that is not an object on one line is
    // wrapped in one.
    void write_raw_line(std::string_view line);

private:
    struct FileCloser {
        void operator()(std::FILE* file) const { std::fclose(file); }
    };
    using OwnedFile = std::unique_ptr<std::FILE, FileCloser>;

    void write_line(LogLevel level, std::string_view text);
    std::string format_entry(std::string_view level, std::string_view text) const;
    void write_locked(std::string_view bytes);  // caller holds mutex_
    // Opens `path` for appending; throws std::runtime_error("cannot open log file ...").
    static OwnedFile open_for_append(const std::string& path);

    std::atomic<LogLevel> level_;
    Format format_ = Format::Text;
    std::FILE* out_;    // where lines go: stderr (or the constructor's stream) or owned_file_
    OwnedFile owned_file_;
    std::string path_;  // of owned_file_; empty while writing to the constructor's stream
    std::mutex mutex_;  // guards out_, owned_file_, path_ and every write
};

}  // namespace ringlb
