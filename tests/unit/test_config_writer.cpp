// Writing the running configuration back to its file (`write config`): owner and mode kept,
// nothing followed through symlinks, refusals that leave the file alone, numbered backups.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "ringlb/app/config_writer.hpp"

using ringlb::app::ConfigWriteResult;
using ringlb::app::write_config_file;
namespace fs = std::filesystem;

namespace {

class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "ringlb-writer-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern + " failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
        fs::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return (path_ / name).string(); }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& text, mode_t mode) {
    std::ofstream(path, std::ios::binary) << text;
    REQUIRE(::chmod(path.c_str(), mode) == 0);
}

mode_t mode_of(const std::string& path) {
    struct stat status {};
    REQUIRE(::lstat(path.c_str(), &status) == 0);
    return status.st_mode & 07777;
}

bool is_regular_file(const std::string& path) {
    struct stat status {};
    return ::lstat(path.c_str(), &status) == 0 && S_ISREG(status.st_mode);
}

// Files in the directory besides the ones named: no temporary file may be left behind.
size_t entries_in(const fs::path& dir) {
    return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("config writer: the new file keeps the old one's mode (0600: it holds tokens)") {
    TempDir dir;
    const std::string config = dir.file("ringlb.toml");
    write_file(config, "old\n", 0600);
    const ConfigWriteResult result = write_config_file(config, "new\n");
    REQUIRE_MESSAGE(result.ok(), result.error);
    CHECK(read_file(config) == "new\n");
    CHECK(mode_of(config) == 0600);
    CHECK(result.backup == config + ".1");
    CHECK(read_file(config + ".1") == "old\n");
    CHECK(mode_of(config + ".1") == 0600);
    CHECK(entries_in(dir.path()) == 2);

    write_file(config, "group readable\n", 0640);
    REQUIRE(write_config_file(config, "newer\n").ok());
    CHECK(mode_of(config) == 0640);
}

TEST_CASE("config writer: a symlink planted at FILE.tmp is not followed") {
    TempDir outside;
    TempDir dir;
    const std::string victim = outside.file("victim");
    write_file(victim, "precious\n", 0644);
    const std::string config = dir.file("ringlb.toml");
    write_file(config, "old\n", 0600);
    REQUIRE(::symlink(victim.c_str(), (config + ".tmp").c_str()) == 0);

    const ConfigWriteResult result = write_config_file(config, "new\n");
    REQUIRE_MESSAGE(result.ok(), result.error);
    CHECK(read_file(victim) == "precious\n");
    CHECK(is_regular_file(config));
    CHECK(read_file(config) == "new\n");
    CHECK(fs::is_symlink(config + ".tmp"));  // left as it was
}

TEST_CASE("config writer: a symlinked configuration (a mounted ConfigMap) is refused and left alone") {
    TempDir dir;
    const std::string target = dir.file("..data-ringlb.toml");
    write_file(target, "from the config map\n", 0644);
    const std::string config = dir.file("ringlb.toml");
    REQUIRE(::symlink(target.c_str(), config.c_str()) == 0);

    const ConfigWriteResult result = write_config_file(config, "new\n");
    CHECK_FALSE(result.ok());
    CHECK(result.error.find(config + " is a symbolic link") != std::string::npos);
    CHECK(fs::is_symlink(config));
    CHECK(read_file(target) == "from the config map\n");
    CHECK(entries_in(dir.path()) == 2);
}

TEST_CASE("config writer: a read-only file or directory is refused with the reason, the file untouched") {
    TempDir dir;
    const std::string config = dir.file("ringlb.toml");
    SUBCASE("read-only file") {
        write_file(config, "old\n", 0444);
        const ConfigWriteResult result = write_config_file(config, "new\n");
        CHECK_FALSE(result.ok());
        CHECK(result.error.find("is read-only (mode 0444)") != std::string::npos);
    }
    if (::geteuid() != 0) {  // root may create files anywhere
        SUBCASE("directory without write permission") {
            write_file(config, "old\n", 0600);
            REQUIRE(::chmod(dir.path().c_str(), 0500) == 0);
            const ConfigWriteResult result = write_config_file(config, "new\n");
            CHECK_FALSE(result.ok());
            CHECK(result.error.find("cannot create a temporary file in " + dir.path().string()) != std::string::npos);
            REQUIRE(::chmod(dir.path().c_str(), 0700) == 0);
        }
    }
    CHECK(read_file(config) == "old\n");
    CHECK(entries_in(dir.path()) == 1);
}

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// Runs write_config_file in a child that has dropped root for nobody:nogroup, as ringlb does
// with `[global] user`; returns its error ("" on success).
std::string write_as_nobody(const std::string& path) {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(pipe_fds[0]);
        std::string error = "cannot drop privileges";
        if (::setgroups(0, nullptr) == 0 && ::setgid(kNogroup) == 0 && ::setuid(kNobody) == 0)
            error = write_config_file(path, "new\n").error;
        [[maybe_unused]] const ssize_t written = ::write(pipe_fds[1], error.data(), error.size());
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    std::string error;
    char chunk[512];
    for (ssize_t n; (n = ::read(pipe_fds[0], chunk, sizeof chunk)) > 0;) error.append(chunk, static_cast<size_t>(n));
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    return error;
}

}  // namespace

TEST_CASE("config writer: after dropping privileges, what cannot be kept is refused and the file left alone") {
    if (::geteuid() != 0) {
        MESSAGE("skipped: dropping privileges needs root");
        return;
    }
    TempDir dir;
    REQUIRE(::chmod(dir.path().c_str(), 0777) == 0);  // the unprivileged child may create files here
    const std::string config = dir.file("ringlb.toml");
    SUBCASE("a root-owned 0600 file is not writable") {
        write_file(config, "old\n", 0600);
        CHECK(write_as_nobody(config).find(config + " is not writable by this process (uid 65534, gid 65534)") !=
              std::string::npos);
    }
    SUBCASE("a group-writable root-owned file cannot keep its owner") {
        write_file(config, "old\n", 0660);
        REQUIRE(::chown(config.c_str(), 0, kNogroup) == 0);
        CHECK(write_as_nobody(config).find("cannot give the new file the owner of " + config + " (uid 0, gid 65534)") !=
              std::string::npos);
    }
    CHECK(read_file(config) == "old\n");
    CHECK(entries_in(dir.path()) == 1);  // no temporary file left behind
}

TEST_CASE("config writer: the last five files are kept as FILE.1 (newest) .. FILE.5") {
    TempDir dir;
    const std::string config = dir.file("ringlb.toml");
    write_file(config, "version 0\n", 0600);
    for (int version = 1; version <= 7; ++version)
        REQUIRE(write_config_file(config, "version " + std::to_string(version) + "\n").ok());
    CHECK(read_file(config) == "version 7\n");
    for (int n = 1; n <= 5; ++n) CHECK(read_file(config + "." + std::to_string(n)) == "version " + std::to_string(7 - n) + "\n");
    CHECK_FALSE(fs::exists(config + ".6"));
    CHECK(entries_in(dir.path()) == 6);
}

TEST_CASE("config writer: a file that is gone is written anew with mode 0600") {
    TempDir dir;
    const std::string config = dir.file("ringlb.toml");
    const ConfigWriteResult result = write_config_file(config, "new\n");
    REQUIRE_MESSAGE(result.ok(), result.error);
    CHECK(result.backup.empty());
    CHECK(mode_of(config) == 0600);
    CHECK(read_file(config) == "new\n");
}
