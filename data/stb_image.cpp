// stb_image's implementation, compiled with kd instead of linked from Debian's prebuilt libstb:
// built with kd's flags, so the sanitizers and the fuzzers (tests/fuzz) see inside the decoder.
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
