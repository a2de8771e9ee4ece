// `mman_exp synth`: writes a synthetic IEMOCAP-shaped dataset file, marked as synthetic.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "mman/atomic_file.h"
#include "mman/data/dataset.h"
#include "mman/data/synth.h"
#include "mman/error.h"
#include "src/cli/commands.h"

namespace mman::cli {

int cmd_synth(const SynthArgs& args) {
  namespace fs = std::filesystem;
  if (args.out.empty()) fail("synth: --out FILE is required");
  if (fs::is_directory(args.out)) fail("{}: is a folder; --out names the HDF5 file to write", args.out);
  const fs::path parent = fs::path(args.out).parent_path();
  ensure_writable_dir(parent.empty() ? std::string(".") : parent.string());

  const Dataset ds = synth_dataset(args.preset, args.seed);

  // write_dataset() is atomic (temporary, fsync, rename), and the dataset carries its
  // `synthetic` root attribute, so `out` is either absent or complete and marked.
  try {
    write_dataset(ds, args.out);
  } catch (const Error& e) {
    fail("{}: not written: {}", args.out, e.what());
  }

  int64_t per_split[2] = {0, 0};
  for (int s = 0; s < 2; ++s) {
    for (const std::string& id : ds.splits.at(s == 0 ? "train" : "test"))
      for (int c = 0; c < ds.num_conversations(); ++c)
        if (ds.conv_ids[static_cast<size_t>(c)] == id) per_split[s] += ds.conv_length(c);
  }
  std::string dims;
  for (int m = 0; m < static_cast<int>(ds.modalities.size()); ++m)
    dims += fmt::format("{}{} {}", m ? ", " : "", ds.modalities[static_cast<size_t>(m)], ds.dim(m));
  fmt::print("wrote {}: SYNTHETIC {} data (seed {}), {} conversations (train {}, test {}), {} utterances (train {}, test {}), {}\n",
             args.out, args.preset, args.seed, ds.num_conversations(), ds.splits.at("train").size(),
             ds.splits.at("test").size(), ds.num_utterances(), per_split[0], per_split[1], dims);
  return 0;
}

}  // namespace mman::cli
