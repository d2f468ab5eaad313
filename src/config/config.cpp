// Loading a Config: the YAML file, then `--set section.key=value` overrides in order, then
// validation; and the two ways out of the key table: the resolved YAML and the --help lines.
#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "config/field_values.h"
#include "config/key_table.h"
#include "core/errors.h"

namespace relora {
namespace {

using config_detail::ConfigKey;

// "configs/x.yaml:7", the place of a node in the file (yaml-cpp counts lines from 0).
std::string location(const std::string& path, const YAML::Node& node) {
  return path + ":" + std::to_string(node.Mark().line + 1);
}

YAML::Node read_yaml_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    RELORA_INPUT_ERROR("config file '" << path << "' not found; give the path of a YAML config, "
                                       << "e.g. configs/tiny.yaml");
  }
  if (std::filesystem::is_directory(path, error)) {
    RELORA_INPUT_ERROR("config file '" << path << "' is a directory; give the path of a YAML file");
  }
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.is_open() || in.bad()) {
    RELORA_INPUT_ERROR("config file '" << path << "' cannot be read; check its permissions");
  }
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    RELORA_INPUT_ERROR(path << ":" << e.mark.line + 1 << ":" << e.mark.column + 1
                            << ": YAML syntax error: " << e.msg);
  }
}

void apply_section(Config& cfg, const std::string& path, const std::string& section,
                   const YAML::Node& keys, KeyOrigins& origins) {
  std::set<std::string> seen;
  for (const auto& entry : keys) {
    const std::string name = entry.first.IsScalar() ? entry.first.Scalar() : "?";
    const std::string full_name = section + "." + name;
    const std::string where = location(path, entry.first);
    const ConfigKey* key = config_detail::find_config_key(full_name);
    if (key == nullptr) {
      RELORA_INPUT_ERROR(where << ": " << config_detail::unknown_key_message(full_name));
    }
    if (!seen.insert(name).second) {
      RELORA_INPUT_ERROR(where << ": key '" << full_name << "' appears twice; keep one");
    }
    config_detail::set_field(*key, cfg, entry.second, where + ": " + full_name);
    origins[full_name] = where;
  }
}

// Applies a parsed YAML document; `path` names where it came from in messages.
void apply_yaml_root(Config& cfg, const std::string& path, const YAML::Node& root,
                     KeyOrigins& origins) {
  if (root.IsNull()) return;  // an empty file: every key keeps its default
  if (!root.IsMap()) {
    RELORA_INPUT_ERROR(location(path, root) << ": expected sections such as 'model:' and "
                                            << "'relora:' at the top level, got a "
                                            << (root.IsSequence() ? "list" : "single value"));
  }
  std::set<std::string> seen;
  for (const auto& entry : root) {
    const std::string section = entry.first.IsScalar() ? entry.first.Scalar() : "?";
    const std::string where = location(path, entry.first);
    if (!config_detail::is_config_section(section)) {
      RELORA_INPUT_ERROR(where << ": " << config_detail::unknown_section_message(section));
    }
    if (!seen.insert(section).second) {
      RELORA_INPUT_ERROR(where << ": section '" << section
                               << "' appears twice; merge its keys into one section");
    }
    if (entry.second.IsNull()) continue;  // "model:" with nothing under it
    if (!entry.second.IsMap()) {
      RELORA_INPUT_ERROR(where << ": section '" << section << "' must hold 'key: value' lines, got "
                               << (entry.second.IsSequence() ? "a list" : "a single value"));
    }
    apply_section(cfg, path, section, entry.second, origins);
  }
}

std::string trimmed(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// "section.key=value"; the value is YAML ("[q_proj, v_proj]", "1e-3", "" for empty), and text
// that is not valid YAML (a glob like "*.bin") is taken as it stands.
void apply_override(Config& cfg, const std::string& assignment, KeyOrigins& origins) {
  const std::string where = "--set " + assignment;
  const size_t equals = assignment.find('=');
  if (equals == std::string::npos) {
    RELORA_INPUT_ERROR(where << ": expected section.key=value, e.g. relora.rank=64");
  }
  const std::string full_name = trimmed(assignment.substr(0, equals));
  const std::string text = assignment.substr(equals + 1);
  const ConfigKey* key = config_detail::find_config_key(full_name);
  if (key == nullptr) {
    RELORA_INPUT_ERROR(where << ": " << config_detail::unknown_key_message(full_name));
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(text);
  }
  config_detail::set_field(*key, cfg, value, where + ": " + full_name);
  origins[full_name] = where;
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides, ConfigUse use) {
  Config cfg;
  KeyOrigins origins;
  apply_yaml_root(cfg, path, read_yaml_file(path), origins);
  cfg.source = path;
  for (const std::string& assignment : overrides) apply_override(cfg, assignment, origins);
  validate_config(cfg, overrides.empty() ? path : path + " with --set overrides", origins, use);
  return cfg;
}

Config config_from_yaml_text(const std::string& yaml, const std::string& where,
                             const std::vector<std::string>& overrides, ConfigUse use) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    RELORA_INPUT_ERROR(where << ":" << e.mark.line + 1 << ":" << e.mark.column + 1
                             << ": YAML syntax error: " << e.msg);
  }
  Config cfg;
  KeyOrigins origins;
  apply_yaml_root(cfg, where, root, origins);
  cfg.source = where;
  for (const std::string& assignment : overrides) apply_override(cfg, assignment, origins);
  validate_config(cfg, overrides.empty() ? where : where + " with --set overrides", origins, use);
  return cfg;
}

Config config_from_overrides(const std::vector<std::string>& overrides) {
  Config cfg;
  KeyOrigins origins;
  for (const std::string& assignment : overrides) apply_override(cfg, assignment, origins);
  validate_config(cfg, overrides.empty() ? "config" : "--set", origins);
  return cfg;
}

std::string config_to_yaml(const Config& cfg) {
  // Comments line up at this column; longer lines put theirs two spaces after the value.
  constexpr size_t kCommentColumn = 36;
  std::string out = "# relora config: every key, resolved";
  out += cfg.source.empty() ? " from the defaults" : " from " + cfg.source;
  out += "\n";
  std::string section;
  for (const ConfigKey& key : config_detail::config_keys()) {
    if (section != key.section) {
      section = key.section;
      out += section + ":\n";
    }
    std::string line = std::string("  ") + key.name + ": " + config_detail::field_yaml(key, cfg);
    line.resize(std::max(line.size() + 2, kCommentColumn), ' ');
    out += line + "# " + key.doc + "\n";
  }
  return out;
}

std::string config_keys_help() {
  // Columns: key, default, doc. A default wider than its column puts the doc on the next line.
  constexpr size_t kDefaultWidth = 14;
  const Config defaults;
  size_t key_width = 0;
  for (const ConfigKey& key : config_detail::config_keys()) {
    key_width = std::max(key_width, key.full_name().size());
  }
  const size_t doc_column = 2 + key_width + 2 + kDefaultWidth + 2;
  std::string out;
  for (const ConfigKey& key : config_detail::config_keys()) {
    std::string line = "  " + key.full_name();
    line.resize(2 + key_width + 2, ' ');
    line += config_detail::field_yaml(key, defaults);
    if (line.size() + 2 > doc_column) {
      out += line + "\n";
      line.clear();
    }
    line.resize(doc_column, ' ');
    out += line + key.doc + "\n";
  }
  return out;
}

}  // namespace relora
