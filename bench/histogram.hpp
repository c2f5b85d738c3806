#pragma once
// HDR-style log-linear histogram of nanosecond values: exact below 128 ns, then
// 128 linear sub-buckets per power of two (relative precision <= 1/128 < 0.8%),
// up to 2^46 ns (~19.5 h; larger values are clamped into the last bucket, the
// exact max is kept apart). Two histograms merge exactly (bucket-wise sums), so
// per-thread and per-process histograms add up to the same result as one.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace bench {

class histogram {
 public:
  static constexpr int sub_bits = 7;
  static constexpr uint64_t sub_count = uint64_t{1} << sub_bits;  // 128
  static constexpr int max_exp = 46;                                // values < 2^46 ns
  static constexpr size_t bucket_count = sub_count + (max_exp - sub_bits) * sub_count;

  histogram() : counts_(bucket_count, 0) {}

  static size_t index_of(uint64_t v) {
    if (v < sub_count) return static_cast<size_t>(v);
    if (v >= (uint64_t{1} << max_exp)) v = (uint64_t{1} << max_exp) - 1;
    int e = 63 - __builtin_clzll(v);  // >= sub_bits
    int shift = e - sub_bits;
    uint64_t sub = (v >> shift) - sub_count;  // [0, 128)
    return static_cast<size_t>(sub_count + uint64_t(e - sub_bits) * sub_count + sub);
  }
  static uint64_t lowest_of(size_t idx) {
    if (idx < sub_count) return idx;
    uint64_t o = (idx - sub_count) / sub_count, sub = (idx - sub_count) % sub_count;
    return (sub_count + sub) << o;
  }
  static uint64_t highest_of(size_t idx) {
    if (idx < sub_count) return idx;
    uint64_t o = (idx - sub_count) / sub_count;
    return lowest_of(idx) + (uint64_t{1} << o) - 1;
  }

  void record(int64_t v) {
    if (v < 0) v = 0;  // clocks are monotonic; a negative value would be a bug upstream
    uint64_t u = static_cast<uint64_t>(v);
    ++counts_[index_of(u)];
    if (count_ == 0 || u < min_) min_ = u;
    if (u > max_) max_ = u;
    ++count_;
    sum_ += static_cast<double>(u);
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  double mean() const { return count_ ? sum_ / double(count_) : 0.0; }

  // Value at quantile q in [0,1]: the highest value equivalent to the bucket
  // that holds the ceil(q*count)-th smallest value, clamped to [min, max].
  uint64_t quantile(double q) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * double(count_) + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > count_) rank = count_;
    uint64_t acc = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      acc += counts_[i];
      if (acc >= rank) return std::clamp(highest_of(i), min(), max_);
    }
    return max_;
  }

  void merge(const histogram& o) {
    if (o.count_ == 0) return;
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
    if (count_ == 0 || o.min_ < min_) min_ = o.min_;
    max_ = std::max(max_, o.max_);
    count_ += o.count_;
    sum_ += o.sum_;
  }

  nlohmann::json to_json() const {
    nlohmann::json b = nlohmann::json::array();
    for (size_t i = 0; i < counts_.size(); ++i)
      if (counts_[i]) b.push_back({i, counts_[i]});
    return {{"n", count_}, {"min", min()}, {"max", max_}, {"sum", sum_}, {"b", b}};
  }
  static histogram from_json(const nlohmann::json& j) {
    histogram h;
    h.count_ = j.value("n", uint64_t{0});
    h.min_ = j.value("min", uint64_t{0});
    h.max_ = j.value("max", uint64_t{0});
    h.sum_ = j.value("sum", 0.0);
    if (j.contains("b"))
      for (const auto& p : j["b"]) {
        size_t i = p[0].get<size_t>();
        if (i < h.counts_.size()) h.counts_[i] += p[1].get<uint64_t>();
      }
    return h;
  }

  // Summary in milliseconds for reports.
  nlohmann::ordered_json summary_ms() const {
    auto ms = [](uint64_t ns) { return double(ns) / 1e6; };
    nlohmann::ordered_json j;
    j["count"] = count_;
    j["p50"] = ms(quantile(0.50));
    j["p90"] = ms(quantile(0.90));
    j["p99"] = ms(quantile(0.99));
    j["p999"] = ms(quantile(0.999));
    j["max"] = ms(max_);
    j["mean"] = mean() / 1e6;
    return j;
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0, min_ = 0, max_ = 0;
  double sum_ = 0;
};

}  // namespace bench
