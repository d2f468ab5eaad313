// The config key table: every key's section, name, field in Config and one-line doc, in the
// order `relora train --help` and the resolved config file list them. Parsing, unknown-key
// detection, help text and YAML output all walk this one table (key_table.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "config/config.h"

namespace relora::config_detail {

// A key's field inside a Config, typed: one alternative per kind of value a key can hold.
using FieldRef =
    std::variant<bool*, int*, uint64_t*, float*, std::string*, std::vector<std::string>*>;
using ConstFieldRef = std::variant<const bool*, const int*, const uint64_t*, const float*, const std::string*,
                                   const std::vector<std::string>*>;

struct ConfigKey {
  const char* section;  // "relora"
  const char* name;     // "rank"
  const char* doc;      // one line for --help and the resolved config
  FieldRef (*field)(Config&);
  ConstFieldRef (*const_field)(const Config&);

  std::string full_name() const { return std::string(section) + "." + name; }
};

// Every key, grouped by section, sections in file order.
const std::vector<ConfigKey>& config_keys();

// The section names in table order.
const std::vector<std::string>& config_sections();

// The key called "section.name", or nullptr.
const ConfigKey* find_config_key(const std::string& full_name);

bool is_config_section(const std::string& name);

// "unknown key 'relora.rnak' (did you mean 'relora.rank'?)"; without a close match it lists
// the section's keys, or the sections when the section is unknown too.
std::string unknown_key_message(const std::string& full_name);

// "unknown section 'relroa' (did you mean 'relora'?)", or the list of sections.
std::string unknown_section_message(const std::string& name);

}  // namespace relora::config_detail
