#pragma once
// One kind of event that may come in floods (refused connections, failed logins): the first is
// logged in full at once, later ones within the interval are only counted, and one summary line
// says how many there were. A flood costs a few lines per interval, not one line per event, and
// the log still tells how large it was.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "ringlb/util/log.hpp"

namespace ringlb {

class ThrottledLog {
public:
    using Clock = std::chrono::steady_clock;

    // `summary` completes "<N> more <summary> in the last <interval>", e.g. "admin connections
    // refused (every slot in use)".
    ThrottledLog(Logger& log, LogLevel level, std::string summary,
                 std::chrono::milliseconds interval = std::chrono::seconds(10))
        : log_(log), level_(level), summary_(std::move(summary)), interval_(interval) {}

    // One event: logged now (the parts make the line) when no line of this kind went out within
    // the interval, otherwise counted for the next summary.
    template <typename... Parts>
    void event(Clock::time_point now, const Parts&... parts) {
        if (suppressed_ == 0 && (!last_line_ || now - *last_line_ >= interval_)) {
            last_line_ = now;
            log_.log(level_, parts...);
            return;
        }
        ++suppressed_;
    }

    // Writes the summary once the interval since the last line has passed. Returns when it wants
    // to be called again (nullopt: nothing is waiting to be summarised).
    std::optional<Clock::time_point> flush(Clock::time_point now) {
        if (suppressed_ == 0) return std::nullopt;
        const Clock::time_point due = *last_line_ + interval_;
        if (now < due) return due;
        const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - *last_line_).count();
        log_.log(level_, suppressed_, " more ", summary_, " in the last ", seconds, " s");
        suppressed_ = 0;
        last_line_ = now;
        return std::nullopt;
    }

private:
    Logger& log_;
    LogLevel level_;
    std::string summary_;
    std::chrono::milliseconds interval_;
    std::optional<Clock::time_point> last_line_;
    uint64_t suppressed_ = 0;
};

}  // namespace ringlb
