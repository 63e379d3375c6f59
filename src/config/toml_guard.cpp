#include "ringlb/config/toml_guard.hpp"

#include <toml++/impl/version.h>

namespace ringlb::config {

namespace {

// The code points toml++ 3.3's whitespace test does not cover (see the header).
bool unsafe_for_toml_library(uint32_t code_point) {
#if TOML_LIB_MAJOR < 3 || (TOML_LIB_MAJOR == 3 && TOML_LIB_MINOR <= 4)
    if (code_point == 0xA0 || code_point == 0x3000 || code_point == 0xFEFF) return false;  // real whitespace
    return (code_point >= 0xA0 && code_point <= 0x499) || (code_point >= 0x2C5E && code_point <= 0x3057) ||
           (code_point >= 0xFB26 && code_point <= 0xFF1F);
#else
    (void)code_point;
    return false;
#endif
}

// Decodes the code point of a 2- or 3-byte UTF-8 sequence at text[i] (0 for anything else: a
// malformed sequence is the library's to reject, and it does so safely).
uint32_t code_point_at(std::string_view text, size_t i) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
    if (byte(0) >= 0xC2 && byte(0) <= 0xDF && i + 1 < text.size())
        return ((byte(0) & 0x1Fu) << 6) | (byte(1) & 0x3Fu);
    if (byte(0) >= 0xE0 && byte(0) <= 0xEF && i + 2 < text.size())
        return ((byte(0) & 0x0Fu) << 12) | ((byte(1) & 0x3Fu) << 6) | (byte(2) & 0x3Fu);
    return 0;
}

// Just enough of TOML's lexical structure to know whether a position is inside a string or a
// comment: "basic" and 'literal' strings, their """multi-line""" forms, and # comments.
class Scanner {
public:
    explicit Scanner(std::string_view text) : text_(text) {}

    std::optional<UnsafeCharacter> run() {
        for (i_ = 0; i_ < text_.size(); ++i_) {
            const char c = text_[i_];
            if (c == '\n') {
                ++line_;
                line_start_ = i_ + 1;
                if (state_ == State::Comment || state_ == State::Basic || state_ == State::Literal) state_ = State::Code;
                continue;
            }
            switch (state_) {
                case State::Code: on_code(c); break;
                case State::Comment: break;
                case State::Basic: on_basic(c, false); break;
                case State::MultiBasic: on_basic(c, true); break;
                case State::Literal:
                    if (c == '\'') state_ = State::Code;
                    break;
                case State::MultiLiteral:
                    if (starts_with("'''")) close_multi();
                    break;
            }
            if (state_ == State::Code && static_cast<unsigned char>(c) >= 0x80) {
                const uint32_t code_point = code_point_at(text_, i_);
                if (unsafe_for_toml_library(code_point))
                    return UnsafeCharacter{line_, static_cast<unsigned>(i_ - line_start_ + 1), code_point};
            }
        }
        return std::nullopt;
    }

private:
    enum class State { Code, Comment, Basic, MultiBasic, Literal, MultiLiteral };

    bool starts_with(std::string_view token) const { return text_.substr(i_, token.size()) == token; }
    void close_multi() {
        i_ += 2;
        state_ = State::Code;
    }

    void on_code(char c) {
        if (c == '#') {
            state_ = State::Comment;
        } else if (starts_with("\"\"\"")) {
            state_ = State::MultiBasic;
            i_ += 2;
        } else if (starts_with("'''")) {
            state_ = State::MultiLiteral;
            i_ += 2;
        } else if (c == '"') {
            state_ = State::Basic;
        } else if (c == '\'') {
            state_ = State::Literal;
        }
    }

    void on_basic(char c, bool multi_line) {
        if (c == '\\') {
            ++i_;  // an escape: the next byte cannot end the string
            if (i_ < text_.size() && text_[i_] == '\n') {
                ++line_;
                line_start_ = i_ + 1;
            }
        } else if (multi_line ? starts_with("\"\"\"") : c == '"') {
            if (multi_line) close_multi();
            else state_ = State::Code;
        }
    }

    std::string_view text_;
    size_t i_ = 0;
    size_t line_start_ = 0;
    unsigned line_ = 1;
    State state_ = State::Code;
};

}  // namespace

std::optional<UnsafeCharacter> find_unsafe_character(std::string_view toml_text) {
    return Scanner(toml_text).run();
}

}  // namespace ringlb::config
