# Runs a tool and checks its exit status and output (CTest's PASS_REGULAR_EXPRESSION alone would
# ignore the exit status). Lists use "|" between items, since ";" splits add_test arguments.
#   -DCOMMAND=prog|arg|...    the command to run; it must exit 0
#   -DEXPECT=text|...         literal text the output must contain
#   -DNAMES_FROM=prog|arg|... optional: a command printing one benchmark name a line; each must
#                             start a line of the output (the table) and be named in a RESULT line
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "exit status ${rc} (expected 0) from: ${command}\n${err}")
endif()

if(DEFINED EXPECT)
  string(REPLACE "|" ";" expected "${EXPECT}")
  foreach(text IN LISTS expected)
    string(FIND "${out}" "${text}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "output lacks '${text}'")
    endif()
  endforeach()
endif()

if(DEFINED NAMES_FROM)
  string(REPLACE "|" ";" list_command "${NAMES_FROM}")
  execute_process(COMMAND ${list_command} OUTPUT_VARIABLE names RESULT_VARIABLE list_rc)
  if(NOT list_rc EQUAL 0)
    message(FATAL_ERROR "exit status ${list_rc} from: ${list_command}")
  endif()
  string(REGEX REPLACE "\n$" "" names "${names}")
  string(REPLACE "\n" ";" names "${names}")
  list(LENGTH names count)
  if(count EQUAL 0)
    message(FATAL_ERROR "no benchmark names from: ${list_command}")
  endif()
  foreach(name IN LISTS names)
    string(FIND "\n${out}" "\n${name} " row)
    string(FIND "${out}" "\"name\": \"${name}\"" result)
    if(row EQUAL -1 OR result EQUAL -1)
      message(FATAL_ERROR "benchmark ${name}: table row found: ${row}, RESULT line found: ${result}")
    endif()
  endforeach()
  message(STATUS "all ${count} benchmarks printed a table row and a RESULT line")
endif()
