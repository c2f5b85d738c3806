#pragma once
// A small, allocation-free scanner for the server's JSON objects. A receiver in
// a busy room sees hundreds of thousands of `message` events per second, so the
// hot path must not build a DOM: this walks one object once, skips what it does
// not need (strings with escapes, nested objects and arrays) and picks out the
// few fields the benchmark uses. Field order does not matter. String values
// are returned raw (escapes not decoded): the fields read here (type, room,
// epoch, code) never need escapes in what the bench sends or the server emits.
#include <cstdint>
#include <cstring>
#include <string_view>

namespace bench {

struct event {
  std::string_view type, room, epoch, code, message;
  bool has_id = false;
  int64_t id = 0;
  bool has_seq = false;
  uint64_t seq = 0;
  int recovered = -1;  // -1 absent, 0 false, 1 true
  bool has_t = false;  // data.t present (a bench message)
  int64_t t = 0, s = -1, n = -1;
};

class scanner {
 public:
  // Returns false if `text` is not one well-formed JSON object (as far as
  // this scanner checks).
  static bool scan(std::string_view text, event& ev) {
    scanner sc(text);
    return sc.object_top(ev);
  }

 private:
  const char* p_;
  const char* e_;
  explicit scanner(std::string_view t) : p_(t.data()), e_(t.data() + t.size()) {}

  void ws() {
    while (p_ < e_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
  }
  bool str(std::string_view& out) {
    if (p_ >= e_ || *p_ != '"') return false;
    ++p_;
    const char* s = p_;
    for (;;) {
      const void* q = std::memchr(p_, '"', size_t(e_ - p_));
      if (!q) return false;
      const char* qq = static_cast<const char*>(q);
      const char* b = qq;
      while (b > s && b[-1] == '\\') --b;
      p_ = qq + 1;
      if (((qq - b) & 1) == 0) {
        out = std::string_view(s, size_t(qq - s));
        return true;
      }
    }
  }
  bool integer(int64_t& out, bool& is_int) {
    const char* s = p_;
    bool neg = false;
    if (p_ < e_ && *p_ == '-') {
      neg = true;
      ++p_;
    }
    uint64_t v = 0;
    const char* d = p_;
    while (p_ < e_ && *p_ >= '0' && *p_ <= '9') v = v * 10 + uint64_t(*p_++ - '0');
    if (p_ == d) {
      p_ = s;
      return false;
    }
    is_int = true;
    // A fraction or exponent: not an integer; skip the rest of the number.
    while (p_ < e_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E' || *p_ == '+' || *p_ == '-' ||
                       (*p_ >= '0' && *p_ <= '9'))) {
      is_int = false;
      ++p_;
    }
    out = neg ? -int64_t(v) : int64_t(v);
    return true;
  }
  bool literal() {
    const char* s = p_;
    while (p_ < e_ && *p_ != ',' && *p_ != '}' && *p_ != ']' && *p_ != ' ' && *p_ != '\t' &&
           *p_ != '\r' && *p_ != '\n')
      ++p_;
    return p_ > s;
  }
  bool skip_value(int depth) {
    if (depth > 64) return false;
    ws();
    if (p_ >= e_) return false;
    std::string_view sv;
    switch (*p_) {
      case '"':
        return str(sv);
      case '{': {
        ++p_;
        ws();
        if (p_ < e_ && *p_ == '}') {
          ++p_;
          return true;
        }
        for (;;) {
          ws();
          if (!str(sv)) return false;
          ws();
          if (p_ >= e_ || *p_ != ':') return false;
          ++p_;
          if (!skip_value(depth + 1)) return false;
          ws();
          if (p_ >= e_) return false;
          if (*p_ == ',') {
            ++p_;
            continue;
          }
          if (*p_ == '}') {
            ++p_;
            return true;
          }
          return false;
        }
      }
      case '[': {
        ++p_;
        ws();
        if (p_ < e_ && *p_ == ']') {
          ++p_;
          return true;
        }
        for (;;) {
          if (!skip_value(depth + 1)) return false;
          ws();
          if (p_ >= e_) return false;
          if (*p_ == ',') {
            ++p_;
            continue;
          }
          if (*p_ == ']') {
            ++p_;
            return true;
          }
          return false;
        }
      }
      default:
        return literal();
    }
  }
  bool data_object(event& ev) {
    ws();
    if (p_ >= e_ || *p_ != '{') return skip_value(1);
    ++p_;
    ws();
    if (p_ < e_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      ws();
      std::string_view k;
      if (!str(k)) return false;
      ws();
      if (p_ >= e_ || *p_ != ':') return false;
      ++p_;
      ws();
      if (k.size() == 1 && (k[0] == 't' || k[0] == 's' || k[0] == 'n') && p_ < e_ &&
          (*p_ == '-' || (*p_ >= '0' && *p_ <= '9'))) {
        int64_t v = 0;
        bool is_int = false;
        if (!integer(v, is_int)) return false;
        if (is_int) {
          if (k[0] == 't') {
            ev.t = v;
            ev.has_t = true;
          } else if (k[0] == 's') {
            ev.s = v;
          } else {
            ev.n = v;
          }
        }
      } else if (!skip_value(2)) {
        return false;
      }
      ws();
      if (p_ >= e_) return false;
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      return false;
    }
  }
  bool object_top(event& ev) {
    ws();
    if (p_ >= e_ || *p_ != '{') return false;
    ++p_;
    ws();
    if (p_ < e_ && *p_ == '}') return true;
    for (;;) {
      ws();
      std::string_view k;
      if (!str(k)) return false;
      ws();
      if (p_ >= e_ || *p_ != ':') return false;
      ++p_;
      ws();
      if (p_ >= e_) return false;
      bool handled = false;
      if (*p_ == '"') {
        std::string_view* dst = nullptr;
        if (k == "type")
          dst = &ev.type;
        else if (k == "room")
          dst = &ev.room;
        else if (k == "epoch")
          dst = &ev.epoch;
        else if (k == "code")
          dst = &ev.code;
        else if (k == "message")
          dst = &ev.message;
        if (dst) {
          if (!str(*dst)) return false;
          handled = true;
        }
      } else if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) {
        if (k == "id" || k == "seq") {
          int64_t v = 0;
          bool is_int = false;
          if (!integer(v, is_int)) return false;
          if (is_int) {
            if (k == "id") {
              ev.id = v;
              ev.has_id = true;
            } else if (v >= 0) {
              ev.seq = uint64_t(v);
              ev.has_seq = true;
            }
          }
          handled = true;
        }
      } else if (*p_ == '{' && k == "data") {
        if (!data_object(ev)) return false;
        handled = true;
      } else if ((*p_ == 't' || *p_ == 'f') && k == "recovered") {
        ev.recovered = *p_ == 't' ? 1 : 0;
        if (!literal()) return false;
        handled = true;
      }
      if (!handled && !skip_value(1)) return false;
      ws();
      if (p_ >= e_) return false;
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') return true;
      return false;
    }
  }
};

}  // namespace bench
