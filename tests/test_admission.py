from __future__ import annotations

from deployments.core.admission import Admission


def test_everything_is_admitted_until_the_model_refuses() -> None:
    admission = Admission()
    with admission.call(), admission.call(), admission.call():
        assert admission.admit(now=0.0)
    assert admission.shed == 0


def test_after_a_refusal_as_many_running_calls_shed_new_ones() -> None:
    admission = Admission(memory_s=1.0)
    with admission.call(), admission.call():
        with admission.call():
            admission.refused(now=10.0)  # two others were running: the model holds two
        assert not admission.admit(now=10.2)
        with admission.call():
            assert not admission.admit(now=10.3)
    assert admission.shed == 2
    assert admission.admit(now=10.4)  # the calls ended: room again


def test_one_call_finishing_makes_room() -> None:
    admission = Admission()
    with admission.call():
        with admission.call(), admission.call():
            admission.refused(now=0.0)
        assert admission.admit(now=0.1)


def test_a_refusal_is_forgotten_after_its_memory() -> None:
    admission = Admission(memory_s=1.0)
    with admission.call(), admission.call():
        with admission.call():
            admission.refused(now=0.0)
        assert not admission.admit(now=0.5)
        assert admission.admit(now=1.5)  # probe again: replicas may have been added
