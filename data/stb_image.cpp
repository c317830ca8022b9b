// stb_image's implementation, compiled with kd instead of linked from Debian's prebuilt libstb:
// built with kd's flags, so the sanitizers and the fuzzers (tests/fuzz) see inside the decoder.
// The header is Debian's with fixes that CMakeLists.txt adds: stb 2.28's checks of JPEG Huffman
// tables and of the JPEG bit reader, and an empty PNG IDAT chunk copies nothing.
// Only the formats kd reads (data/image.h): every other decoder would be attack surface for
// files that merely carry an image extension.
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image_checked.h>
