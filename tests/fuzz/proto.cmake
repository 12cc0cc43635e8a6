psc_add_fuzzer(fuzz_proto_message
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_proto_message.c ${CMAKE_SOURCE_DIR}/tests/support/proto_samples.c
  LIBS psc_proto
  CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/proto_message)
target_include_directories(fuzz_proto_message PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
