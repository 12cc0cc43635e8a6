# Policy loader fuzz target (policy/). Seeds: tests/fuzz/corpus/policy_load.
if(TARGET psc_policy)
  psc_add_fuzzer(fuzz_policy_load
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_policy_load.c
    LIBS psc_policy
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/policy_load)
endif()
