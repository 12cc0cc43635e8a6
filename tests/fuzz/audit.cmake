# Fuzz target for the audit verifier's record and checkpoint parsers (audit/).
if(TARGET psc_audit)
  psc_add_fuzzer(fuzz_audit_record
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_audit_record.c
    LIBS psc_audit
    CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/audit_record)
endif()
