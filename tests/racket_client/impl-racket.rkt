#lang racket/base
;; The reference side of the differential test: Racket's own sockets.
(require racket/tcp racket/udp "names.rkt")
(provide racket-impl)
(define racket-impl (impl))
