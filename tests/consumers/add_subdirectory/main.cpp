// Packaging test: <lasp/lasp.hpp> is host-only C++17 and usable without CUDA.
#include <lasp/lasp.hpp>

#include <cstdio>
#include <cstring>

int main() {
  const char* s = lasp::to_string(lasp::Status::kSuccess);
  std::printf("lasp add_subdirectory consumer: %s\n", s);
  return s != nullptr && std::strlen(s) > 0 ? 0 : 1;
}
