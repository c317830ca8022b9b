// stb_image_write's implementation, for the tests that write image fixtures (kd itself only
// reads images; data/stb_image.cpp holds the reader).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
