#pragma once
// GoogleTest prints an errc by its wire name ("too_large"), not as raw bytes.
#include <ostream>

#include "messages/errors.hpp"

namespace chat {

inline void PrintTo(errc e, std::ostream* os) { *os << to_string(e); }

}  // namespace chat
