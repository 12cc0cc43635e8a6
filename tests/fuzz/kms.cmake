# State command decoder + store apply fuzz target (kms/). Seeds:
# tests/fuzz/corpus/kms_cmd (written by test_kms_cmd --write-corpus DIR).
if(TARGET psc_kms_core)
  psc_add_fuzzer(fuzz_kms_cmd
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_kms_cmd.c
            ${CMAKE_SOURCE_DIR}/tests/unit/kms/test_cmd_samples.c
    LIBS psc_kms_core
    CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/kms_cmd)
  target_include_directories(fuzz_kms_cmd PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit/kms)
endif()
