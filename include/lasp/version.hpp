#pragma once
// lasp version (semantic versioning; bumped on every API change).
#include "config.hpp"
#define LASP_VERSION_MAJOR 0
#define LASP_VERSION_MINOR 3
#define LASP_VERSION_PATCH 1

LASP_NAMESPACE_BEGIN
inline constexpr int kVersionMajor = LASP_VERSION_MAJOR;
inline constexpr int kVersionMinor = LASP_VERSION_MINOR;
inline constexpr int kVersionPatch = LASP_VERSION_PATCH;
LASP_NAMESPACE_END
