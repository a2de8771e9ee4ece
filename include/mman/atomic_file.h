// Crash-safe file output: write to a temporary name, flush to disk, rename into place.
#pragma once
#include <string>
#include <vector>

namespace mman {

// Replaces `path` with `content` atomically: readers see the old file or the whole new
// one, never a prefix, and a crash leaves no partial file at `path` (a stray
// "<path>.tmp-<pid>" at worst). Throws mman::Error naming the path and the OS reason
// (unwritable folder, disk full, ...); the temporary is removed on failure.
void write_file_atomic(const std::string& path, const std::string& content);

// Creates a folder and its parents; throws mman::Error naming it when that fails or
// it exists but is not a writable folder.
void ensure_writable_dir(const std::string& path);

// Removes, under `folder` (recursively), the temporaries that processes which no longer
// run left behind when they were killed mid-write: "<name>.tmp-<pid>" (write_file_atomic)
// and ".<name>.tmp-<pid>-<n>" (h5::File::create). Temporaries of live processes are
// kept. Returns the paths removed. For `mman_exp run --resume` after a SIGKILL.
std::vector<std::string> remove_stale_temporaries(const std::string& folder);

}  // namespace mman
