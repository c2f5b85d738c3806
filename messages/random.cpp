#include "messages/random.hpp"

#include <cstdint>
#include <random>

namespace chat {

std::string random_hex(size_t n) {
  thread_local std::random_device rd;
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(n, '0');
  uint32_t bits = 0;
  for (size_t i = 0; i < n; ++i, bits >>= 4) {
    if (i % 8 == 0) bits = rd();  // 32 bits: eight digits
    out[i] = digits[bits & 15];
  }
  return out;
}

}  // namespace chat
