#pragma once
// lasp version (semantic versioning; bumped on every API change).
#define LASP_VERSION_MAJOR 0
#define LASP_VERSION_MINOR 1
#define LASP_VERSION_PATCH 0

namespace lasp {
inline constexpr int kVersionMajor = LASP_VERSION_MAJOR;
inline constexpr int kVersionMinor = LASP_VERSION_MINOR;
inline constexpr int kVersionPatch = LASP_VERSION_PATCH;
}  // namespace lasp
