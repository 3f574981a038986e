// Package conditions keeps the conditions of KubeVirt's statuses (VMI, VM,
// replica set: each has its own condition type with the same fields) the
// way Kubernetes' controllers do: an unchanged condition is not rewritten,
// and one whose status holds keeps its transition time.
package conditions

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Fields are what Set compares.
type Fields struct {
	Type    string
	Status  corev1.ConditionStatus
	Reason  string
	Message string
}

// Accessor gives a condition's compared fields and its transition time.
type Accessor[C any] func(*C) (Fields, *metav1.Time)

// Set puts c into conds. An identical condition (type, status, reason and
// message) is left as it is, times included; one whose status did not
// change keeps its transition time.
func Set[C any](conds []C, c C, of Accessor[C]) []C {
	f, transition := of(&c)
	for i := range conds {
		have, haveTransition := of(&conds[i])
		if have.Type != f.Type {
			continue
		}
		if have == f {
			return conds
		}
		if have.Status == f.Status {
			*transition = *haveTransition
		}
		conds[i] = c
		return conds
	}
	return append(conds, c)
}

// Remove drops the conditions of type t.
func Remove[C any](conds []C, t string, of Accessor[C]) []C {
	kept := conds[:0]
	for i := range conds {
		if f, _ := of(&conds[i]); f.Type != t {
			kept = append(kept, conds[i])
		}
	}
	return kept
}
