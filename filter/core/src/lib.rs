//! missiongate pure core (being written).
