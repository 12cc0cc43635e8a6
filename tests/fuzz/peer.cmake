# Group message frames (peer-sdk/psc_seal.c) as a member receives them from the
# network: parse, one-shot open, and psc_peer_open() on a real psc_peer.
psc_add_fuzzer(fuzz_seal_frame
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_seal_frame.c
  LIBS pscpeer_static psc_proto
  CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/seal_frame)
target_include_directories(fuzz_seal_frame PRIVATE ${CMAKE_SOURCE_DIR}/peer-sdk)
