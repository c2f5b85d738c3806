// Runs a libFuzzer entry point over files, without libFuzzer: how every build
// (g++, CI) exercises the fuzz targets on their seed corpus.
//   chat_fuzz_decode_replay DIR|FILE...
// Each regular file is one input (a directory: every file in it, sorted). A
// broken invariant aborts inside the entry point; no input at all fails too,
// so a missing corpus cannot pass for a clean one.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

namespace {

// The input being replayed, named on stderr if it aborts (write(2) is
// async-signal-safe; the default action then ends the process as before).
const char* g_current = nullptr;

void on_abort(int sig) {
  if (g_current) {
    const char* prefix = "replay: this input broke an invariant: ";
    [[maybe_unused]] auto a = ::write(2, prefix, std::strlen(prefix));
    [[maybe_unused]] auto b = ::write(2, g_current, std::strlen(g_current));
    [[maybe_unused]] auto c = ::write(2, "\n", 1);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    if (fs::is_directory(argv[i], ec)) {
      for (auto& e : fs::directory_iterator(argv[i], ec))
        if (e.is_regular_file()) inputs.push_back(e.path());
    } else if (fs::is_regular_file(argv[i], ec)) {
      inputs.emplace_back(argv[i]);
    } else {
      std::fprintf(stderr, "replay: %s: no such file or directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  std::signal(SIGABRT, on_abort);
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: no inputs (usage: %s DIR|FILE...)\n", argv[0]);
    return 2;
  }
  for (auto& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
      return 2;
    }
    // libFuzzer hands a buffer of exactly `size` bytes: so does this (ASan sees overreads).
    std::vector<uint8_t> buf(data.begin(), data.end());
    g_current = path.c_str();
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
  }
  std::printf("replay: %zu inputs, no broken invariant\n", inputs.size());
  return 0;
}
