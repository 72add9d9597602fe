#pragma once
// The decay schemes (math.md section 1), one file each; none.hpp describes their interface.
#include "gate.hpp"
#include "none.hpp"
#include "per_head.hpp"
