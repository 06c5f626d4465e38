#lang racket/base
;; The drop-in side of the differential test: the same names from the sockbroker collection.
(require sockbroker/tcp sockbroker/udp "names.rkt")
(provide broker-impl)
(define broker-impl (impl))
