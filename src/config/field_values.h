// Typed config values to and from YAML: reading a node into a key's field with a clear type
// error, and writing a field as YAML text that reads back to the identical value.
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>

#include "config/key_table.h"

namespace relora::config_detail {

// Sets `key`'s field in `cfg` from `value`. On a wrong type throws InputError
// "<context>: expected an integer, got 'abc'", where context names the place and the key.
void set_field(const ConfigKey& key, Config& cfg, const YAML::Node& value,
               const std::string& context);

// The field's value as YAML: integers in decimal, floats in the shortest form that reads back
// to the same float, strings plain when that is unambiguous and double-quoted otherwise,
// lists in flow style ([a, b]).
std::string field_yaml(const ConfigKey& key, const Config& cfg);

// A float in its shortest round-tripping form ("0.001", "1e-06"), for messages too.
std::string float_text(float value);

}  // namespace relora::config_detail
