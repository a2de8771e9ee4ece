// Label protocols: how a file's raw labels map to the classes a model predicts.
#pragma once
#include <string>
#include <vector>

namespace mman {

// iemocap4: hap+exc -> happy, sad+fru -> sad, neu -> neutral, ang -> angry.
// iemocap6: the six raw IEMOCAP classes.
// binary4:  four one-vs-rest tasks (happy, sad, neutral, angry) on hap/sad/neu/ang
//           utterances; exc and fru stay as context without loss or score.
// raw:      the file's own label names, in file order (any other corpus).
// Utterances whose raw label maps to no class are context only: masked from loss and
// metrics, but still fed through the recurrent models.
struct LabelProtocol {
  std::string name;
  std::vector<std::string> class_names;  // protocol classes, in output order
  std::vector<int> raw_to_class;         // [label_names.size()] class index or -1
  // binary4: heads = 4 one-vs-rest tasks of 2 outputs each (logits [rows x 8], head k
  // at columns 2k, 2k+1 = "not k", "k"); otherwise heads = 1 over class_names.
  int heads = 1;

  int num_classes() const { return static_cast<int>(class_names.size()); }
  // Width of a model's output layer under this protocol.
  int num_outputs() const { return heads == 1 ? num_classes() : 2 * heads; }
  bool binary() const { return heads > 1; }
  int map(int raw_label) const {
    return raw_label < 0 || raw_label >= static_cast<int>(raw_to_class.size()) ? -1 : raw_to_class[static_cast<size_t>(raw_label)];
  }
};

// Builds a protocol for a file's label names. iemocap4/iemocap6/binary4 require the
// IEMOCAP raw names (hap, sad, neu, ang, exc, fru in any order) and throw mman::Error
// naming what is missing; unknown protocol names throw too.
LabelProtocol make_protocol(const std::string& name, const std::vector<std::string>& label_names);
std::vector<std::string> protocol_names();  // for messages and did-you-mean

}  // namespace mman
