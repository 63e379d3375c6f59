// Logger file output: open_file, reopen for log rotation, raw lines.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "ringlb/util/log.hpp"

using namespace ringlb;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with everything in it at the end.
class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "ringlb-log-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern + " failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

size_t count_lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace

TEST_CASE("utc timestamps have millisecond precision and a Z") {
    using namespace std::chrono;
    CHECK(format_utc_timestamp(sys_days{year{2026} / 11 / 26} + 10h + 7ms) == "2026-11-26T10:00:00.007Z");
}

TEST_CASE("open_file appends, reopen() after a rename writes to a fresh file") {
    TempDir dir;
    const fs::path log_path = dir.path() / "ringlb.log";
    const fs::path rotated = dir.path() / "ringlb.log.1";
    Logger log(LogLevel::Info);
    log.open_file(log_path.string());
    log.info("before rotation");
    log.write_raw_line("raw record one");
    log.debug("not at this level");
    fs::rename(log_path, rotated);
    log.info("after rename, before reopen");  // still the old file: it is only renamed
    log.reopen();
    log.info("after rotation");
    log.write_raw_line("raw record two");

    const std::string old_text = read_file(rotated);
    const std::string new_text = read_file(log_path);
    CHECK(count_lines(old_text) == 3);
    CHECK(old_text.find("Z info before rotation\n") != std::string::npos);
    CHECK(old_text.find("\nraw record one\n") != std::string::npos);
    CHECK(old_text.find("after rename, before reopen\n") != std::string::npos);
    CHECK(old_text.find("not at this level") == std::string::npos);
    CHECK(new_text.find("after rotation\n") != std::string::npos);
    CHECK(new_text.find("raw record two\n") != std::string::npos);
    CHECK(count_lines(new_text) == 2);
}

TEST_CASE("open_file appends to an existing file") {
    TempDir dir;
    const fs::path log_path = dir.path() / "existing.log";
    std::ofstream(log_path) << "already here\n";
    Logger log;
    log.open_file(log_path.string());
    log.write_raw_line("added");
    CHECK(read_file(log_path) == "already here\nadded\n");
}

TEST_CASE("open_file names the path and the reason when it cannot open the file") {
    TempDir dir;
    const std::string missing = (dir.path() / "no-such-dir" / "x.log").string();
    Logger log;
    try {
        log.open_file(missing);
        FAIL("open_file should have thrown");
    } catch (const std::runtime_error& failure) {
        const std::string what = failure.what();
        CHECK(what.find(missing) != std::string::npos);
        CHECK(what.find("No such file or directory") != std::string::npos);
    }
}

TEST_CASE("a failed reopen keeps writing to the old file and says so there") {
    TempDir dir;
    fs::create_directory(dir.path() / "logs");
    Logger log;
    log.open_file((dir.path() / "logs" / "ringlb.log").string());
    log.info("first");
    fs::rename(dir.path() / "logs", dir.path() / "moved");  // the path cannot be opened again
    log.reopen();
    log.info("second");
    const std::string text = read_file(dir.path() / "moved" / "ringlb.log");
    CHECK(count_lines(text) == 3);
    CHECK(text.find(" error log rotation failed") != std::string::npos);
    CHECK(text.find("logs/ringlb.log") != std::string::npos);
    CHECK(text.find("info second\n") != std::string::npos);
}
