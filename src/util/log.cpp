#include "ringlb/util/log.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cerrno>
#include <ctime>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "ringlb/util/text.hpp"

namespace ringlb {
namespace {

std::string lowercase(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

// Thread-safe errno text (std::strerror may share a static buffer).
std::string errno_text(int error_number) { return std::generic_category().message(error_number); }

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view text) {
    const std::string name = lowercase(text);
    if (name == "error") return LogLevel::Error;
    if (name == "warn") return LogLevel::Warn;
    if (name == "info") return LogLevel::Info;
    if (name == "debug") return LogLevel::Debug;
    return std::nullopt;
}

std::string_view to_string(LogLevel level) {
    switch (level) {
        case LogLevel::Error: return "error";
        case LogLevel::Warn: return "warn";
        case LogLevel::Info: return "info";
        case LogLevel::Debug: return "debug";
    }
    return "?";
}

std::string format_utc_timestamp(std::chrono::system_clock::time_point time) {
    using namespace std::chrono;
    // floor, not truncation: times before 1970 still get a millisecond part in 0..999.
    const auto whole_seconds = floor<seconds>(time);
    const auto millis = duration_cast<milliseconds>(time - whole_seconds).count();
    const std::time_t seconds_since_epoch = system_clock::to_time_t(whole_seconds);
    std::tm utc{};
    gmtime_r(&seconds_since_epoch, &utc);
    char buffer[48];
    const size_t n = std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &utc);
    std::snprintf(buffer + n, sizeof buffer - n, ".%03dZ", static_cast<int>(millis));
    return buffer;
}

void Logger::write_line(LogLevel level, std::string_view text) {
    // The whole line is built first so that one fwrite keeps lines from threads whole.
    const std::string line = format_entry(to_string(level), text);
    std::lock_guard lock(mutex_);
    write_locked(line);
}

std::string Logger::format_entry(std::string_view level, std::string_view text) const {
    const std::string time = format_utc_timestamp(std::chrono::system_clock::now());
    std::string line;
    if (format_ == Format::Json) {
        line = "{\"time\":\"" + time + "\",\"level\":\"" + std::string(level) + "\",\"msg\":";
        append_json_string(line, text);
        line += "}\n";
        return line;
    }
    line = time;
    line += ' ';
    line += level;
    line += ' ';
    line += escape_control(text);
    line += '\n';
    return line;
}

void Logger::write_raw_line(std::string_view text) {
    std::string line;
    if (format_ == Format::Json) {
        // A record already made JSON passes as it is; anything else becomes the message of one.
        const bool one_object = text.starts_with('{') && text.ends_with('}') &&
                                std::none_of(text.begin(), text.end(), [](char c) { return c >= 0 && c < 0x20; });
        line = one_object ? std::string(text) + '\n' : format_entry("info", text);
    } else {
        line = escape_control(text);
        line += '\n';
    }
    std::lock_guard lock(mutex_);
    write_locked(line);
}

void Logger::write_locked(std::string_view bytes) {
    std::fwrite(bytes.data(), 1, bytes.size(), out_);
    std::fflush(out_);  // lines must reach the file even if the process is killed right after
}

Logger::OwnedFile Logger::open_for_append(const std::string& path) {
    // "e": close-on-exec, so that children never inherit the log file.
    std::FILE* file = std::fopen(path.c_str(), "ae");
    if (file == nullptr) throw std::runtime_error("cannot open log file '" + path + "': " + errno_text(errno));
    return OwnedFile(file);
}

void Logger::open_file(const std::string& path) {
    OwnedFile file = open_for_append(path);  // throws before anything changes
    std::lock_guard lock(mutex_);
    out_ = file.get();
    std::swap(owned_file_, file);
    path_ = path;
    // `file` now holds the previous owned stream (if any) and closes it on return.
}

void Logger::reopen() {
    std::lock_guard lock(mutex_);
    if (path_.empty()) return;  // stderr: nothing to rotate
    try {
        OwnedFile file = open_for_append(path_);
        out_ = file.get();
        std::swap(owned_file_, file);
    } catch (const std::runtime_error& failure) {
        // Losing lines would be worse than writing on into the renamed file: keep the old stream.
        write_locked(format_entry(to_string(LogLevel::Error),
                                  std::string("log rotation failed, still writing to the previous file: ") +
                                      failure.what()));
    }
}

}  // namespace ringlb
