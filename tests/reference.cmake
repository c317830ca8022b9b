# PyTorch parity: python scripts (Debian's python3-torch, timm from PyPI) write random inputs,
# weights, outputs and gradients to safetensors; the test_parity binary compares. The scripts run
# as CTest fixtures, and a missing torch or timm makes them FAIL, never skip.
set(KD_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with torch and timm for the parity fixtures")
set(kd_parity_dir ${CMAKE_CURRENT_BINARY_DIR}/data/parity)

file(GLOB kd_parity_scripts CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/reference/make_*_fixtures.py)
foreach(script ${kd_parity_scripts})
  get_filename_component(stem ${script} NAME_WE)  # make_ops_fixtures
  string(REGEX REPLACE "^make_(.*)_fixtures$" "\\1" what ${stem})
  add_test(NAME parity_fixtures_${what}
           COMMAND ${KD_PYTHON} ${script} --out ${kd_parity_dir})
  set_tests_properties(parity_fixtures_${what} PROPERTIES FIXTURES_SETUP parity_fixtures LABELS parity
                       ENVIRONMENT "PYTHONPATH=${CMAKE_CURRENT_SOURCE_DIR}/reference;OMP_NUM_THREADS=1")
endforeach()

file(GLOB kd_parity_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/parity/*_test.cpp)
if(kd_parity_sources)
  add_executable(test_parity ${kd_parity_sources})
  target_link_libraries(test_parity PRIVATE kd_test_support kd_cli GTest::gtest_main)
  target_compile_options(test_parity PRIVATE ${kd_cxx_warnings})
  target_compile_definitions(test_parity PRIVATE KD_PARITY_DIR="${kd_parity_dir}")
  gtest_discover_tests(test_parity TEST_PREFIX "parity." DISCOVERY_TIMEOUT 60
                       PROPERTIES FIXTURES_REQUIRED parity_fixtures LABELS parity)
endif()

# kd's own model files load in timm (strict) and give timm's logits: after kd is built.
if(TARGET kd)
  add_test(NAME parity.KdModelFilesLoadInTimm
           COMMAND ${KD_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/reference/check_kd_to_timm.py $<TARGET_FILE:kd>
                   ${CMAKE_CURRENT_BINARY_DIR}/data/kd_to_timm)
  set_tests_properties(parity.KdModelFilesLoadInTimm PROPERTIES LABELS parity TIMEOUT 600
                       ENVIRONMENT "PYTHONPATH=${CMAKE_CURRENT_SOURCE_DIR}/reference;OMP_NUM_THREADS=1")
endif()
