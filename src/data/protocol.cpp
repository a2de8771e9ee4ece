// Label protocols iemocap4, iemocap6, binary4 and raw: raw label -> class maps.
#include "mman/data/protocol.h"

#include <cctype>
#include <string>

#include "mman/error.h"

namespace mman {

namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

// The six IEMOCAP classes in their conventional order (the conv-emotion pickle's 0..5).
const std::vector<std::string>& iemocap_names() {
  static const std::vector<std::string> names = {"hap", "sad", "neu", "ang", "exc", "fru"};
  return names;
}

// Position in the file's label names of each IEMOCAP class, matched case-insensitively.
std::vector<int> find_iemocap(const std::string& protocol, const std::vector<std::string>& label_names) {
  std::vector<int> where;
  std::vector<std::string> missing;
  for (const std::string& want : iemocap_names()) {
    int found = -1;
    for (size_t i = 0; i < label_names.size(); ++i)
      if (lower(label_names[i]) == want) found = static_cast<int>(i);
    if (found < 0) missing.push_back(want);
    where.push_back(found);
  }
  if (!missing.empty())
    fail("label protocol '{}' needs the IEMOCAP labels {}, but the file's labels ({}) lack {}; use protocol 'raw' "
         "for other corpora",
         protocol, join(iemocap_names()), join(label_names), join(missing));
  return where;
}

}  // namespace

std::vector<std::string> protocol_names() { return {"iemocap4", "iemocap6", "binary4", "raw"}; }

LabelProtocol make_protocol(const std::string& name, const std::vector<std::string>& label_names) {
  LabelProtocol p;
  p.name = name;
  p.raw_to_class.assign(label_names.size(), -1);  // labels a protocol does not use are context only
  if (name == "raw") {
    p.class_names = label_names;
    for (size_t i = 0; i < label_names.size(); ++i) p.raw_to_class[i] = static_cast<int>(i);
    return p;
  }
  if (name == "iemocap6") {
    const std::vector<int> where = find_iemocap(name, label_names);
    p.class_names = iemocap_names();
    for (size_t k = 0; k < where.size(); ++k) p.raw_to_class[static_cast<size_t>(where[k])] = static_cast<int>(k);
    return p;
  }
  if (name == "iemocap4" || name == "binary4") {
    const std::vector<int> where = find_iemocap(name, label_names);  // hap sad neu ang exc fru
    p.class_names = {"happy", "sad", "neutral", "angry"};
    for (int k = 0; k < 4; ++k) p.raw_to_class[static_cast<size_t>(where[static_cast<size_t>(k)])] = k;
    if (name == "iemocap4") {
      // The paper's merge: excited counts as happy, frustrated as sad.
      p.raw_to_class[static_cast<size_t>(where[4])] = 0;
      p.raw_to_class[static_cast<size_t>(where[5])] = 1;
    } else {
      // Table 3 (as in MulT): exc and fru stay in the conversation as context only.
      p.heads = 4;
    }
    return p;
  }
  fail("unknown label protocol '{}' (expected one of {})", name, join(protocol_names()));
}

}  // namespace mman
