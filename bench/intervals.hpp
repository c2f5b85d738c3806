#pragma once
// A set of sequence numbers kept as sorted, disjoint, non-adjacent inclusive
// intervals. Messages arrive in order almost always, so the common insert
// extends the last interval in O(1); a receiver that got everything is one pair.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace bench {

struct interval_set {
  using iv = std::pair<uint64_t, uint64_t>;  // [first, second]
  std::vector<iv> v;

  bool empty() const { return v.empty(); }
  uint64_t max() const { return v.empty() ? 0 : v.back().second; }

  bool contains(uint64_t s) const {
    auto it = std::upper_bound(v.begin(), v.end(), s,
                               [](uint64_t x, const iv& p) { return x < p.first; });
    if (it == v.begin()) return false;
    --it;
    return s <= it->second;
  }

  // Returns false if s was already present.
  bool insert(uint64_t s) { return insert_range(s, s) > 0; }

  // Inserts [a, b]; returns how many values were new.
  uint64_t insert_range(uint64_t a, uint64_t b) {
    if (a > b) return 0;
    if (v.empty() || a > v.back().second + 1) {
      v.emplace_back(a, b);
      return b - a + 1;
    }
    if (a >= v.back().first && b <= v.back().second) return 0;
    if (a == v.back().second + 1) {
      v.back().second = b;
      return b - a + 1;
    }
    // General case: merge everything overlapping or adjacent to [a, b].
    uint64_t before = count();
    auto lo = std::lower_bound(v.begin(), v.end(), a,
                               [](const iv& p, uint64_t x) { return p.second + 1 < x; });
    auto hi = lo;
    uint64_t na = a, nb = b;
    while (hi != v.end() && hi->first <= b + 1) {
      na = std::min(na, hi->first);
      nb = std::max(nb, hi->second);
      ++hi;
    }
    lo = v.erase(lo, hi);
    v.insert(lo, iv{na, nb});
    return count() - before;
  }

  uint64_t count() const {
    uint64_t n = 0;
    for (auto& p : v) n += p.second - p.first + 1;
    return n;
  }

  void merge(const interval_set& o) {
    for (auto& p : o.v) insert_range(p.first, p.second);
  }

  // |this ∩ o ∩ (above, upto]|
  uint64_t intersect_count(const interval_set& o, uint64_t above,
                           uint64_t upto = UINT64_MAX) const {
    uint64_t n = 0;
    size_t i = 0, j = 0;
    while (i < v.size() && j < o.v.size()) {
      uint64_t a = std::max({v[i].first, o.v[j].first, above + 1});
      uint64_t b = std::min({v[i].second, o.v[j].second, upto});
      if (a <= b) n += b - a + 1;
      if (v[i].second < o.v[j].second)
        ++i;
      else
        ++j;
    }
    return n;
  }
  // |this ∩ (above, upto]|
  uint64_t count_above(uint64_t above, uint64_t upto = UINT64_MAX) const {
    uint64_t n = 0;
    for (auto& p : v) {
      uint64_t a = std::max(p.first, above + 1);
      uint64_t b = std::min(p.second, upto);
      if (a <= b) n += b - a + 1;
    }
    return n;
  }

  nlohmann::json to_json() const {
    nlohmann::json a = nlohmann::json::array();
    for (auto& p : v) a.push_back({p.first, p.second});
    return a;
  }
  static interval_set from_json(const nlohmann::json& j) {
    interval_set s;
    for (auto& p : j) s.insert_range(p[0].get<uint64_t>(), p[1].get<uint64_t>());
    return s;
  }
};

}  // namespace bench
